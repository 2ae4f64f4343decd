"""`robult-jax compare`: runs keyed by their full config, outputs named by the comparison."""

import json
import os

import pytest

from robult_jax import compare


def _args(workdir, *extra):
    return compare.parse_args([
        "--workdir", str(workdir), "--dataset", "synthetic", "--methods", "robult,robult_fused",
        "--seeds", "0", "--set", "train.num_steps=2", "--set", "train.eval_every=2",
        "--set", "eval.missing_rates=(0.5,)", *extra,
    ])  # fmt: skip


def test_configs_per_method_and_seed_and_their_keys(tmp_path):
    args = _args(tmp_path, "--seeds", "0,1")
    configs = compare.run_configs(args)
    assert [c.model.architecture for c in configs["robult_fused"]] == ["fused", "fused"]
    assert [c.sampling.label_seed for c in configs["robult"]] == [0, 1]
    assert configs["robult"][0].train.num_steps == 2
    keys = {compare.config_key(c) for cs in configs.values() for c in cs}
    assert len(keys) == 4  # every run its own key
    other = compare.run_configs(_args(tmp_path, "--set", "sampling.label_rate=0.5"))
    assert compare.config_key(other["robult"][0]) not in keys
    d = compare.run_dir(str(tmp_path), configs["robult"][1])
    assert d.startswith(os.path.join(str(tmp_path), "runs", "robult", "seed1-"))
    name = compare.comparison_name(args)
    assert name.startswith("comparison-robult,robult_fused-seeds0,1-test-set")
    assert name != compare.comparison_name(_args(tmp_path, "--seeds", "0,1", "--set", "seed=3"))


@pytest.mark.parametrize(
    "extra,message",
    [
        (("--set", "train.num_stpes=3"), "no such config field"),
        (("--set", "train"), "not of the form"),
        (("--methods", "robult,nope"), "no packaged config 'synthetic_nope'"),
    ],
)
def test_bad_requests_are_one_clear_error(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        compare.run_configs(_args(tmp_path, *extra))


@pytest.mark.slow
def test_runs_are_reused_only_when_their_config_matches(tmp_path, capsys):
    workdir = tmp_path / "cmp"
    runs = compare.compare(_args(workdir))
    assert set(runs) == {"robult", "robult_fused"}
    name = compare.comparison_name(_args(workdir))
    for ext in ("md", "json", "csv", "tex", "png", "pdf"):
        assert (workdir / f"{name}.{ext}").exists()
    assert "[compare]" in capsys.readouterr().out
    compare.compare(_args(workdir))  # the same comparison again: nothing trains
    assert "[compare]" not in capsys.readouterr().out
    compare.compare(_args(workdir, "--set", "sampling.label_rate=0.5"))  # other runs
    out = capsys.readouterr().out
    assert out.count("[compare]") == 2
    assert len(os.listdir(workdir / "runs" / "robult")) == 2
    tables = sorted(p.name for p in workdir.iterdir() if p.suffix == ".md")
    assert len(tables) == 2  # the first table was not overwritten
    saved = json.loads((workdir / f"{name}.json").read_text())
    assert saved["runs"]["robult"][0]["label_rate"] == 0.25
    assert sorted(os.listdir(tmp_path)) == ["cmp"]  # nothing written elsewhere
