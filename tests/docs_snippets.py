"""Run the Python snippets of one section of a docs page, checking what they print.

A snippet's expected output is written as comment lines right after its ``print(...)`` line;
they must equal what the section prints, in order.
"""

import contextlib
import io
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section_blocks(page, heading):
    """The ```python blocks between ``## heading`` and the next ``## `` heading of ``page``."""
    text = (DOCS / page).read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def expected_output(block):
    lines, expected, after_print = block.splitlines(), [], False
    for line in lines:
        if after_print and line.startswith("# "):
            expected.append(line[2:])
            continue
        after_print = line.startswith("print(")
    return expected


def run_section(page, heading):
    """Execute the section's blocks in one namespace; return it. Asserts the printed output."""
    blocks = section_blocks(page, heading)
    assert blocks, f"no python blocks under '## {heading}' in {page}"
    namespace, out = {"__name__": "__docs__"}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, f"{page}: {heading}", "exec"), namespace)
    expected = [line for block in blocks for line in expected_output(block)]
    assert out.getvalue().splitlines() == expected
    return namespace
