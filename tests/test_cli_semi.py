"""`skal simulate --semi` and `--initial-strategy typiclust`."""

import io

import numpy as np
import pytest

from skal._cli_data import CommandError
from skal.cli import build_learners, build_parser, main, simulate
from skal.initial import initial_batch
from skal._cli_spec import parse_selectors
from skal.cli import SELECTORS
from skal.semi import FixMatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(argv, tmp_path):
    args = build_parser().parse_args([*argv, "--out", str(tmp_path), "--quiet"])
    return simulate(args, out=io.StringIO())


def test_semi_adds_the_part_to_every_net():
    X = np.zeros((10, 64), dtype=np.float32)
    specs = parse_selectors("margin,random", SELECTORS)
    learners = build_learners(specs, "mlp", X, np.arange(10), epochs=2, device="cpu", semi="pseudo")
    for learner in learners.values():
        assert [type(cb).__name__ for _, cb in learner.estimator.callbacks] == ["PseudoLabel"]
    X = np.zeros((10, 1, 16, 16), dtype=np.float32)
    learners = build_learners(specs, "cnn", X, np.arange(10), epochs=2, device="cpu", semi="fixmatch")
    assert all(isinstance(l.estimator.callbacks[0][1], FixMatch) for l in learners.values())
    with pytest.raises(CommandError, match="--semi fixmatch augments images"):
        build_learners(specs, "mlp", X.reshape(10, -1), np.arange(10), epochs=2, device="cpu", semi="fixmatch")


def test_a_semi_campaign_trains_on_the_pool_and_differs_from_one_without(tmp_path):
    argv = ["--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "20", "--repeats", "1",
            "--selectors", "margin", "--pool-size", "300"]
    plain = _run(["simulate", *argv], tmp_path / "a")
    semi = _run(["simulate", *argv, "--semi", "pseudo"], tmp_path / "b")
    assert semi.meta["config"]["semi"] == "pseudo" and plain.meta["config"]["semi"] == "none"
    assert plain.n_labeled.tolist() == semi.n_labeled.tolist() == [20, 30]
    assert not np.array_equal(plain.scores, semi.scores)


def test_typiclust_is_an_initial_strategy_of_simulate(tmp_path, monkeypatch):
    import skal.initial

    calls = []

    def spy(X, n, **kwargs):
        calls.append((len(X), n, kwargs["strategy"]))
        return initial_batch(X, n, **kwargs)

    monkeypatch.setattr(skal.initial, "initial_batch", spy)
    result = _run(["simulate", "--initial", "10", "--query", "5", "--cycles", "1", "--epochs", "1",
                   "--repeats", "2", "--selectors", "random", "--pool-size", "200",
                   "--initial-strategy", "typiclust"], tmp_path)
    assert result.meta["initial_strategy"] == "typiclust"
    assert calls == [(200, 10, "typiclust")] * 2


def test_unknown_semi_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--semi", "mixmatch"])
    assert exc.value.code == 2
    assert "argument --semi: invalid choice: 'mixmatch'" in capsys.readouterr().err
