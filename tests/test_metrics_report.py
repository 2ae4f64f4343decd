"""Tests for robult_jax.metrics and robult_jax.report (hand-computed values)."""

import json
import logging
import math
import os
import shutil
import subprocess

import numpy as np
import pytest

from robult_jax import figures, metrics, provenance, report, tasks

# ---------------------------------------------------------------- metrics


def test_accuracy():
    assert metrics.accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    with pytest.raises(ValueError, match="shape"):
        metrics.accuracy(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy(np.array([], int), np.array([], int))


def test_confusion_matrix():
    cm = metrics.confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    np.testing.assert_array_equal(cm, [[1, 1], [0, 1]])
    with pytest.raises(ValueError, match=r"y_N must be in \[0, 2\)"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)


def test_macro_f1_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp=2 fp=0 fn=1 -> 4/5; class 1: tp=1 fp=1 fn=1 -> 2/4;
    # class 2: tp=1 fp=1 fn=0 -> 2/3; class 3 never occurs -> excluded.
    expected = (4 / 5 + 2 / 4 + 2 / 3) / 3
    assert math.isclose(metrics.macro_f1(pred, y, num_classes=4), expected)


def test_macro_f1_predicted_only_class_counts_as_zero():
    # class 0: tp=1 fp=0 fn=1 -> 2/3; class 1 predicted but never true -> F1 0.
    assert math.isclose(metrics.macro_f1(np.array([0, 1]), np.array([0, 0]), 2), 1 / 3)


def test_macro_f1_perfect():
    y = np.array([2, 0, 1, 2])
    assert metrics.macro_f1(y, y, 5) == 1.0


def test_classification_metrics():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    y = np.array([0, 1, 2, 2])
    out = metrics.classification_metrics(logits, y)
    assert out["accuracy"] == 0.75
    # class 0: 1; class 1: tp=1 fp=1 fn=0 -> 2/3; class 2: tp=1 fp=0 fn=1 -> 2/3.
    assert math.isclose(out["macro_f1"], (1 + 2 / 3 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="logits_NxC"):
        metrics.classification_metrics(logits, y[:3])


def test_multilabel_metrics_sklearn_conventions():
    logits = np.array([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    out = tasks.get("multilabel").metrics(logits, y)
    # label 0: tp=1 fp=1 -> 2/3; label 1: tp=1 -> 1; label 2 never true nor
    # predicted -> 0 (sklearn: all columns count, 0/0 F1 is 0).
    assert math.isclose(out["macro_f1"], (2 / 3 + 1 + 0) / 3)
    assert math.isclose(out["micro_f1"], 4 / 5)  # tp=2 fp=1 fn=0
    assert math.isclose(out["weighted_f1"], (2 / 3 + 1) / 2)  # supports 1, 1, 0
    # per sample: {0} vs {0} -> 1; {0,1} vs {1} -> 2/3; {} vs {} -> 0.
    assert math.isclose(out["samples_f1"], (1 + 2 / 3 + 0) / 3)
    assert math.isclose(out["accuracy"], 8 / 9)
    assert math.isclose(out["subset_accuracy"], 2 / 3)
    # Soft labels are decided at 0.5; a logit of exactly 0 is a negative prediction.
    soft = metrics.multilabel_metrics(np.array([[0.0, 2.0]]), np.array([[0.4, 0.6]]))
    assert soft["micro_f1"] == 1.0 and soft["subset_accuracy"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        metrics.multilabel_metrics(logits, y[:, :2])


def test_regression_metrics_mosi_conventions():
    pred = np.array([2.6, -0.4, 0.49, 0.51, 2.5, -2.5, 0.2, -3.7])
    y = np.array([3.0, 0.0, 0.4, 0.49, 3.0, -2.0, -0.3, -2.6])
    out = tasks.get("regression").metrics(pred[:, None], y)
    assert math.isclose(out["mae"], np.mean(np.abs(pred - y)))
    assert math.isclose(out["mse"], np.mean((pred - y) ** 2))
    assert math.isclose(out["pearson"], np.corrcoef(pred, y)[0, 1])
    # acc7, clip to [-3, 3] then round half to even: pred 3 0 0 1 2 -2 0 -3 vs
    # y 3 0 0 0 3 -2 0 -3 (0.51 vs 0.49 and 2.5 -> 2 vs 3 differ; -2.5 -> -2 agrees).
    assert out["acc7"] == 6 / 8
    # acc5, clip to [-2, 2]: only 0.51 vs 0.49 differs.
    assert out["acc5"] == 7 / 8
    # acc2 drops the zero label (index 1); 0.2 vs -0.3 is the only error.
    assert math.isclose(out["acc2"], 6 / 7)
    # f1_2 on the 7: positive class tp=4 fp=1 fn=0 (F1 8/9, support 4);
    # negative class tp=2 fp=0 fn=1 (F1 4/5, support 3).
    assert math.isclose(out["f1_2"], (4 * 8 / 9 + 3 * 4 / 5) / 7)
    # Non-negative convention, all 8: y = 0 counts as >= 0, so -0.4 is now wrong too.
    assert out["acc2_nonneg"] == 6 / 8
    # >= 0: tp=4 fp=1 fn=1 (F1 8/10, support 5); < 0: tp=2 fp=1 fn=1 (F1 4/6, support 3).
    assert math.isclose(out["f1_2_nonneg"], (5 * 0.8 + 3 * 4 / 6) / 8)


def test_regression_metrics_degenerate_cases():
    out = metrics.regression_metrics(np.full(4, 0.5), np.array([1.0, -1.0, 2.0, 0.0]))
    assert out["pearson"] == 0.0  # constant prediction
    assert metrics.pearson(np.array([1.0, 2.0]), np.array([3.0, 3.0])) == 0.0
    assert math.isclose(metrics.pearson(np.array([1.0, 2.0, 4.0]), np.array([-2, -4, -8])), -1)
    zeros = metrics.regression_metrics(np.array([1.0, -1.0]), np.zeros(2))
    assert math.isnan(zeros["acc2"]) and math.isnan(zeros["f1_2"])
    assert zeros["acc2_nonneg"] == 0.5
    with pytest.raises(ValueError, match="shape"):
        metrics.regression_metrics(np.zeros((3, 2)), np.zeros((3, 2)))


@pytest.mark.parametrize(
    ("task", "outputs", "labels"),
    [
        ("multiclass", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0])),
        ("multilabel", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1, 0], [1, 1]])),
        ("regression", np.array([[1.0], [-1.0]]), np.array([0.5, 1.0])),
    ],
)
def test_task_metrics_keys_have_directions(task, outputs, labels):
    out = tasks.get(task).metrics(outputs, labels)
    assert tasks.get(task).primary_metric in out
    assert set(out) <= set(metrics.HIGHER_IS_BETTER)
    assert metrics.HIGHER_IS_BETTER["mae"] is False and metrics.HIGHER_IS_BETTER["macro_f1"]


def test_task_metrics_unknown_task():
    with pytest.raises(ValueError, match="multiclass"):
        tasks.get("ranking")


def test_mean_std_population():
    mean, std = metrics.mean_std([0.8, 0.9, 1.0])
    assert math.isclose(mean, 0.9)
    assert math.isclose(std, math.sqrt(0.02 / 3))  # ddof=0
    assert metrics.mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        metrics.mean_std([])


# ----------------------------------------------------------------- report


def _run(acc_full: float, acc_rate: float, seed: int) -> dict:
    return {
        "dataset": "toy",
        "method": "robult",
        "label_rate": 0.1,
        "seed": seed,
        "mask_hashes": {"rate=0.5/seed=0": "0123456789abcdef"},
        "subsets": {
            "acc": {"accuracy": acc_full - 0.2, "macro_f1": 0.5},
            "acc+gyro": {"accuracy": acc_full, "macro_f1": 0.7},
        },
        "random_missing": {
            "0.0": {"accuracy": acc_full, "macro_f1": 0.7},
            "0.5": {"accuracy": acc_rate, "macro_f1": 0.6},
        },
    }


def test_write_results_files(tmp_path):
    results = _run(0.9, 0.7, seed=0)
    results["label_rate"] = np.float32(0.25)  # numpy scalars must serialise
    paths = report.write_results(tmp_path, results)
    with open(paths["json"]) as f:
        loaded = json.load(f)
    assert loaded["subsets"] == results["subsets"]
    assert loaded["label_rate"] == 0.25
    md = open(paths["md"]).read()
    assert "- **dataset**: toy" in md
    assert "| subset acc+gyro | 0.900 | 0.700 |" in md
    assert "| missing rate 0.5 | 0.700 | 0.600 |" in md
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_write_results_aggregated_and_warns_on_other_run(tmp_path, caplog):
    agg = report.aggregate_runs([_run(0.8, 0.6, 0), _run(1.0, 0.8, 1)])
    report.write_results(tmp_path, agg)
    md = open(tmp_path / "results.md").read()
    assert "| subset acc+gyro | 0.900 +/- 0.141 |" in md  # sample std of 0.8, 1.0: 0.1 * sqrt(2)
    assert open(tmp_path / "results.png", "rb").read(4) == b"\x89PNG"
    with caplog.at_level(logging.WARNING):
        report.write_results(tmp_path, _run(0.5, 0.5, seed=9))
    assert "another run" in caplog.text


def test_write_results_requires_sections(tmp_path):
    with pytest.raises(ValueError, match="random_missing"):
        report.write_results(tmp_path, {"subsets": {}})


def test_aggregate_runs():
    agg = report.aggregate_runs([_run(0.8, 0.5, 0), _run(0.9, 0.6, 1), _run(1.0, 0.7, 2)])
    cell = agg["subsets"]["acc+gyro"]["accuracy"]
    assert math.isclose(cell["mean"], 0.9)
    assert math.isclose(cell["std"], 0.1)  # sample std, ddof=1: sqrt(0.02 / 2)
    assert math.isclose(cell["ci95"], 4.3027 * 0.1 / math.sqrt(3)) and cell["n"] == 3
    np.testing.assert_allclose(cell["values"], [0.8, 0.9, 1.0])
    assert math.isclose(agg["random_missing"]["0.5"]["accuracy"]["mean"], 0.6)
    assert agg["seed"] == [0, 1, 2]  # differing provenance -> per-run list
    assert agg["dataset"] == "toy" and agg["num_runs"] == 3 and "ddof=1" in agg["spread"]
    # Aggregating aggregates pools the per-seed values.
    again = report.aggregate_runs([agg, _run(0.6, 0.5, 3)])
    assert again["subsets"]["acc+gyro"]["accuracy"]["values"] == pytest.approx([0.8, 0.9, 1, 0.6])
    assert again["num_runs"] == 4


def test_aggregate_runs_mismatched_conditions():
    bad = _run(0.8, 0.5, 1)
    del bad["random_missing"]["0.5"]
    with pytest.raises(ValueError, match="run 1 lacks"):
        report.aggregate_runs([_run(0.8, 0.5, 0), bad])


def test_comparison_table():
    runs = {
        "robult": [_run(0.8, 0.5, 0), _run(0.9, 0.6, 1), _run(1.0, 0.7, 2)],
        "supervised": [_run(0.5, 0.25, 0)],
    }
    table = report.comparison_table(runs, rates=(0.0, 0.5, 0.9))
    lines = table.splitlines()
    assert lines[0] == "| accuracy | robult | supervised |"
    # Sample std (ddof=1) over the 3 seeds; one run has no spread: "(n=1)".
    assert "| subset acc | 0.700 +/- 0.100 | 0.300 (n=1) |" in lines
    assert "| subset acc+gyro | 0.900 +/- 0.100 | 0.500 (n=1) |" in lines
    assert "| missing rate 0.5 | 0.600 +/- 0.100 | 0.250 (n=1) |" in lines
    assert "| missing rate 0.9 | n/a | n/a |" in lines
    # Robustness: mean of the rates 0 and 0.5, and its ratio to supervised's (0.375).
    assert "| AUC missing rate 0-0.5 | 0.750 +/- 0.100 | 0.375 (n=1) |" in lines
    assert "| AUC ratio to supervised | 2.000 | 1.000 |" in lines
    f1 = report.comparison_table(runs, metric="macro_f1", rates=(0.5,))
    assert "| missing rate 0.5 | 0.600 +/- 0.000 | 0.600 (n=1) |" in f1


def test_plot_comparison(tmp_path):
    runs = {"a": [_run(0.8, 0.5, 0), _run(0.9, 0.6, 1)], "b": [_run(0.6, 0.4, 0)]}
    path = tmp_path / "sub" / "cmp.png"
    figures.plot_comparison(path, runs)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_git_commit(tmp_path):
    assert provenance.git_commit(tmp_path) == "unknown"
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert provenance.git_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("u")  # run outputs do not make it dirty
    assert provenance.git_commit(tmp_path) == head
    (tmp_path / "f.txt").write_text("b")
    assert provenance.git_commit(tmp_path) == head + "+dirty"


def test_report_command_rewrites_a_runs_tables_from_its_results_json(tmp_path, capsys):
    results = _run(0.9, 0.7, seed=0)
    (tmp_path / "results.json").write_text(json.dumps(results))
    report.run(["robult-jax report", str(tmp_path)])
    for ext in ("md", "csv", "tex", "png", "pdf"):
        assert (tmp_path / f"results.{ext}").stat().st_size > 0, ext
    assert "results.tex" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        report.run(["robult-jax report", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert "nothing/results.json" in capsys.readouterr().err
