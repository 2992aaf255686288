"""The learner's module shows its parts (issue 21, point 8).

The state value, the sample and pool handling, the training and the public
estimator live in modules named for them, and persistence reaches the learner
only through :mod:`skal._state`'s interface: no module that the learner's
persistence uses imports :mod:`skal.learner`, so there is no import circle.
"""

import ast
import os

import skal

_SKAL = os.path.dirname(skal.__file__)


def _imports(module):
    """Every module (as a dotted name relative to skal, or absolute) imported anywhere in a file."""
    tree = ast.parse(open(os.path.join(_SKAL, module + ".py")).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            if not node.module:  # from . import _x
                names.update("." + alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _closure(module):
    """The skal modules reachable by imports from ``module`` (anywhere in each file)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imports(name):
            if imported.startswith(".") and not imported.startswith(".."):
                target = imported[1:].split(".")[0]
                if os.path.exists(os.path.join(_SKAL, target + ".py")):
                    todo.append(target)
    return seen


def test_persistence_and_its_helpers_never_import_the_learner_module():
    for module in ("_persistence", "_params", "_state", "_samples", "_training", "_saving"):
        reached = _closure(module)
        assert "learner" not in reached, (module, sorted(reached))


def test_the_learner_reaches_persistence_one_way_and_its_file_is_short():
    assert {"_saving", "_persistence", "_state", "_samples", "_training"} <= _closure("learner")
    with open(os.path.join(_SKAL, "learner.py")) as file:
        assert len(file.read().splitlines()) <= 600


def test_persistence_uses_no_private_name_of_the_learner():
    # the learner's fitted state is read and written through skal._state's interface
    source = open(os.path.join(_SKAL, "_persistence.py")).read()
    for private in ("._state()", "._commit(", "._current_selector(", "._configured_net(", "._fitted"):
        assert private not in source, private
