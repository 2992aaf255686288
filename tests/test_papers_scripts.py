"""The text benchmark's data loader and the GPU papers'-protocol script (run at its tiny CPU size)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _script(name):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_news_labels_come_from_the_address():
    text_data = _script("text_data")
    addresses = ["http://abcnews.go.com/Politics/some-story/story?id=1",
                 "https://www.bbc.co.uk/sport/football/123",
                 "http://www.cnn.com/2017/02/07/politics/world/a.html",  # two sections: dropped
                 "http://tass.com/economy/9",
                 "http://www.aljazeera.com/news/2017/01/x.html"]  # no section
    assert text_data.labels_from_addresses(addresses, "section") == ["politics", "sport", None, "economy", None]
    assert text_data.labels_from_addresses(addresses, "outlet") == [
        "abcnews.go.com", "bbc.co.uk", "cnn.com", "tass.com", "aljazeera.com"]


def test_load_news_reads_a_csv_and_splits_by_section(tmp_path):
    text_data = _script("text_data")
    words = {"politics": "senate vote election", "sport": "match goal league", "economy": "market trade bank"}
    rows = ["article_id,publish_date,article_source_link,title,subtitle,text"]
    for i in range(30):
        section = list(words)[i % 3]
        rows.append(f'{i},2017/1/1,http://x.com/{section}/{i},"t{i}",,"{words[section]} story {i}"')
    rows.append('30,2017/1/1,http://x.com/news/30,"t",,"no section"')
    path = tmp_path / "news.csv"
    path.write_text("\n".join(rows) + "\n")
    X, y, X_test, y_test, names = text_data.load_news("section", path=path, test_size=0.2)
    assert list(names) == ["economy", "politics", "sport"]
    assert X.shape[0] == 24 and X_test.shape[0] == 6 and X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [8, 8, 8])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-6)  # TF-IDF rows, L2-normalised
    with pytest.raises(ValueError, match="label must be 'section' or 'outlet'"):
        text_data.load_news("topic", path=path)


def test_the_gpu_protocol_runs_every_listed_method_at_its_tiny_size(tmp_path):
    script = _script("gpu_papers_protocol")
    methods = ["random", "tidal warm", "isal (validation set)", "disal (paper)"]
    result = script.main(["--tiny", "--methods", ",".join(methods), "--results", str(tmp_path)])
    assert result.names == methods
    assert result.scores.shape == (4, 1, 2)
    np.testing.assert_array_equal(result.n_labeled, [10, 20])
    saved = json.loads((tmp_path / "papers_gpu_tiny.json").read_text())
    assert saved["names"] == methods
    # the papers' recipe, checked on the learners the script builds
    learners = script.learners(None, script.PAPERS, 10, None, "cpu", 32)
    net = learners["tidal warm"].estimator
    assert (net.max_epochs, net.batch_size, net.lr, net.optimizer__momentum, net.optimizer__weight_decay) == (
        200, 128, 0.1, 0.9, 5e-4)
    assert learners["tidal warm"].warm_start is True and learners["tidal cold"].warm_start is False
    assert learners["tidal warm"].selector.subset == 10_000
    assert dict(net.callbacks)["lr"].kwargs["milestones"] == [160]
