"""`skal simulate --config FILE`: a recorded or hand-written run, rerun exactly."""

import json
import re

import numpy as np
import pytest

from skal.cli import main

TINY = ["--initial", "20", "--query", "10", "--cycles", "1", "--epochs", "2", "--repeats", "2"]


def _results(directory):
    return json.loads((directory / "results.json").read_text())


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_results_json_records_every_option_and_reruns_to_the_same_numbers(tmp_path):
    first = tmp_path / "first"
    main(["simulate", *TINY, "--selectors", "random,entropy(batch=stochastic)", "--quiet",
          "--out", str(first)])
    recorded = _results(first)
    assert recorded["meta"]["config"] == {
        "dataset": "digits", "data_path": None, "selectors": ["random", "entropy(batch=stochastic)"],
        "model": "auto", "initial": 20, "initial_strategy": "random", "query": 10, "cycles": 1, "repeats": 2,
        "epochs": 2, "recipe": "plain",
        "pool_size": None, "test_size": 0.3, "test_limit": None, "standardize": True,
        "device": "cpu", "n_jobs": 1, "reference": None, "seed": 0, "out": str(first), "quiet": True, "semi": "none",
    }
    second = tmp_path / "second"
    main(["simulate", "--config", str(first / "results.json"), "--out", str(second)])
    rerun = _results(second)
    assert rerun["names"] == recorded["names"] == ["random", "entropy(batch=stochastic)"]
    np.testing.assert_array_equal(rerun["scores"], recorded["scores"])
    assert rerun["meta"]["config"] == {**recorded["meta"]["config"], "out": str(second)}


def test_a_hand_written_toml_file_runs_like_its_command_line(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('selectors = ["margin", "coreset"]\ninitial = 20\nquery = 10\ncycles = 1\n'
                    'epochs = 2\nrepeats = 2\nseed = 7\nquiet = true\n')
    main(["simulate", "--config", str(toml), "--out", str(tmp_path / "a")])
    main(["simulate", *TINY, "--selectors", "margin,coreset", "--seed", "7", "--quiet",
          "--out", str(tmp_path / "b")])
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert a["names"] == ["margin", "coreset"]
    np.testing.assert_array_equal(a["scores"], b["scores"])
    assert a["meta"]["config"] == {**b["meta"]["config"], "out": str(tmp_path / "a")}


def test_command_line_flags_override_the_file(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"initial": 20, "query": 10, "cycles": 1, "epochs": 2,
                                  "repeats": 1, "selectors": "random", "quiet": True}))
    main(["simulate", "--config", str(config), "--initial", "15", "--selectors", "margin",
          "--out", str(tmp_path / "out")])
    result = _results(tmp_path / "out")
    assert result["n_labeled"] == [15, 25]
    assert result["names"] == ["margin"]
    assert (result["meta"]["config"]["initial"], result["meta"]["config"]["query"]) == (15, 10)


@pytest.mark.parametrize("name, content, message", [
    ("unknown.json", '{"initial": 20, "epoch": 3}',
     r"unknown option 'epoch'; the options are dataset, data_path, selectors, model, initial"),
    ("bad.json", '{"initial": 0}', r"initial: must be a positive integer, got 0$"),
    ("bool.json", '{"initial": true}', r"initial: must be a number or a string, got True$"),
    ("float.json", '{"initial": 2.5}', r"initial: must be a positive integer, got 2\.5$"),
    ("huge.json", '{"repeats": 1000000}', r"repeats: must be at most 1,000, got 1000000$"),
    ("quiet.json", '{"quiet": "yes"}', r"quiet: must be true or false, got 'yes'$"),
    ("model.json", '{"model": "resnet"}', r"model: must be one of auto, mlp, cnn, got 'resnet'$"),
    ("spec.json", '{"selectors": ["disal(foo=1)"]}', r"selectors: disal: unknown parameter 'foo'"),
    ("specs.json", '{"selectors": [1, 2]}', r"selectors: must be a list of selector specs, got \[1, 2\]$"),
    ("device.json", '{"device": "meta"}', r"device: meta: skal simulate trains on cpu, cuda"),
    ("null.json", '{"initial": null}', r"initial: must be a number or a string, got None$"),
    ("list.json", '[1, 2]', r"must hold a table of options, got list$"),
    ("broken.json", '{"initial": ', r"not valid JSON: "),
    ("broken.toml", 'initial = ', r"not valid TOML: "),
    ("results.json", '{"meta": {"initial_size": 20}}',
     r"a results file without meta\.config \(written by skal simulate before it recorded its options\)$"),
    ("run.yaml", "initial: 20", r"give a \.toml or \.json file$"),
])
def test_bad_configuration_files_are_usage_errors_naming_the_key(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(content)
    line = _usage_error(["simulate", "--config", str(path), "--out", str(tmp_path / "out")], capsys)
    assert line.startswith(f"skal simulate: error: --config {path}: ")
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_a_missing_configuration_file(tmp_path, capsys):
    line = _usage_error(["simulate", "--config", str(tmp_path / "none.json")], capsys)
    assert line == f"skal simulate: error: --config {tmp_path / 'none.json'}: cannot read it: No such file or directory"


def test_a_rerun_from_another_folder_finds_the_relative_data_path(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    np.savez(project / "data" / "train.npz", X=X[:300].astype(np.float32), y=y[:300])
    monkeypatch.chdir(project)
    main(["simulate", *TINY, "--dataset", "data/train.npz", "--selectors", "random,margin", "--quiet",
          "--out", "runs/a"])
    recorded = _results(project / "runs" / "a")
    assert recorded["meta"]["config"]["dataset"] == "../../data/train.npz"  # from the results' folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["simulate", "--config", str(project / "runs" / "a" / "results.json"), "--out", "b"])
    np.testing.assert_array_equal(_results(elsewhere / "b")["scores"], recorded["scores"])


def test_an_unknown_option_is_the_verbs_usage_error(capsys):
    assert _usage_error(["simulate", "--bogus", "1"], capsys) == (
        "skal simulate: error: unrecognized arguments: --bogus 1")


def _simulate(argv):
    import io

    from skal.cli import build_parser, simulate

    out = io.StringIO()
    simulate(build_parser().parse_args(argv), out=out)
    return out.getvalue()


def test_reference_names_the_paired_rows_and_its_absence_is_said(tmp_path, capsys):
    table = _simulate(["simulate", *TINY, "--selectors", "margin,entropy", "--reference", "margin", "--quiet",
                       "--out", str(tmp_path / "a")])
    assert "| Δ AUC vs margin (95% CI) |" in table and "vs random" not in table
    out = _simulate(["simulate", *TINY, "--selectors", "margin,entropy", "--quiet", "--out", str(tmp_path / "b")])
    assert "Δ AUC vs" not in out
    assert ("skal simulate: no paired rows in the table: no selector is named random; pass --reference "
            "NAME to compare the others with one of them") in out
    assert _usage_error(["simulate", *TINY, "--selectors", "margin,entropy", "--reference", "random",
                         "--out", str(tmp_path / "c")], capsys) == (
        "skal simulate: error: --reference random: not one of the selectors compared (margin, entropy)")
