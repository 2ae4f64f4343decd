"""Compare methods over seeds on one dataset: `robult-jax compare`.

  robult-jax compare --dataset watch --methods robult,supervised --seeds 0,1,2 \
      --workdir runs/compare_watch

The config of method `robult` is the packaged config `<dataset>`; any other
method `m` uses `<dataset>_<m>`. A method name ending in `_fused`
(`robult_fused`, `supervised_fused`) takes the same config with the "fused"
architecture; the others use the paper's. `--set a.b=v` overrides apply to
every run; `--split validation` evaluates on the validation split (tune there,
and only then run on test).

Each run is keyed by its full config: it trains in
`<workdir>/runs/<method>/seed<k>-<hash of the config>`, so a run is reused
only when its config is exactly the one asked for (asking for 10% labels in a
folder of 5% runs trains new runs), and an interrupted comparison resumes.
The comparison's own files are named by what it compares, e.g.
`comparison-robult,supervised-seeds0,1,2-test.{md,csv,tex,json,png,pdf}` (and
`-subsets.{png,pdf}`, `report.write_comparison`), so a comparison
with other seeds or methods never overwrites another's table. Nothing is
written outside `--workdir`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys

from robult_jax import configs, files, interrupts, report
from robult_jax import workdir as workdir_lib


def load_config(dataset: str, method: str):
    """The config of `method` on `dataset` (module docstring), `config.method` set."""
    base, fused, _ = method.rpartition("_fused")
    base = base if fused else method
    name = dataset if base == "robult" else f"{dataset}_{base}"
    if name not in configs.names():
        raise ValueError(
            f"no packaged config {name!r} for method {method!r} on {dataset!r}; packaged "
            f"configs: {', '.join(configs.names())}."
        )
    config = configs.load(f"{name}:{'fused' if fused else 'paper'}")
    config.method = method
    return config


def apply_override(config, assignment: str) -> None:
    """`a.b=value` (a Python literal, else a string) onto an existing field."""
    key, _, raw = assignment.partition("=")
    if not raw:
        raise ValueError(f"--set {assignment!r} is not of the form a.b=value.")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    node = config
    *path, leaf = key.split(".")
    for p in path:
        if p not in node:
            raise ValueError(f"--set {key}: the config has no group {p!r}.")
        node = node[p]
    if leaf not in node:
        raise ValueError(f"--set {key}: no such config field.")
    node[leaf] = value


def config_key(config) -> str:
    """12 hex digits of the sha256 of the full config (JSON, sorted keys)."""
    text = json.dumps(workdir_lib.config_to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_configs(args) -> dict[str, list]:
    """method -> [config per seed], every override applied."""
    out = {}
    for method in args.methods:
        out[method] = []
        for seed in args.seeds:
            config = load_config(args.dataset, method)
            config.seed = seed
            if not args.fixed_label_split:
                # A seed also redraws which samples are labeled: at a few percent of
                # labels, the choice of labeled samples is a large source of variance.
                config.sampling.label_seed = seed
            config.eval.split = args.split
            config.train.progress_bar = False
            for assignment in args.set:
                apply_override(config, assignment)
            out[method].append(config)
    return out


def run_dir(workdir: str | os.PathLike, config) -> str:
    name = f"seed{config.seed}-{config_key(config)}"
    return os.fspath(files.as_path(workdir) / "runs" / config.method / name)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="robult-jax compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workdir", required=True, help="where runs and tables are written")
    parser.add_argument("--dataset", default="watch")
    parser.add_argument("--methods", default="robult,supervised", help="comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--set", action="append", default=[], metavar="A.B=V")
    parser.add_argument("--rates", default="0,0.5", help="missing rates shown in the table")
    parser.add_argument(
        "--fixed_label_split",
        action="store_true",
        help="keep sampling.label_seed from the config instead of setting it to the seed",
    )
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError as e:
        parser.error(f"--seeds and --rates take comma-separated numbers ({e})")
    return args


def compare(args) -> dict[str, list[dict]]:
    """Trains (or reuses) every run, then writes the comparison files; returns the results."""
    from robult_jax import train  # the trainer pulls in the data stack: only when comparing

    runs: dict[str, list[dict]] = {}
    for method, method_configs in run_configs(args).items():
        runs[method] = []
        for config in method_configs:
            directory = run_dir(args.workdir, config)
            path = files.as_path(directory) / "results.json"
            if not path.exists():
                print(f"[compare] {method} seed={config.seed} -> {directory}", flush=True)
                train.train_and_evaluate(config, directory)
            runs[method].append(files.read_json(path))
    _write(args, runs)
    return runs


def comparison_name(args) -> str:
    overrides = hashlib.sha256("\n".join(args.set).encode()).hexdigest()[:8] if args.set else ""
    parts = [",".join(args.methods), "seeds" + ",".join(map(str, args.seeds)), args.split]
    return "comparison-" + "-".join(parts + ([f"set{overrides}"] if overrides else []))


def _write(args, runs: dict[str, list[dict]]) -> None:
    labeled = "" if args.fixed_label_split else " and the labeled subset"
    notes = (
        f"Each training seed sets the model init, data order{labeled}; "
        f"overrides: {', '.join(args.set) or 'none'}."
    )
    paths = report.write_comparison(
        args.workdir, runs, name=comparison_name(args), rates=args.rates, notes=notes
    )
    print(files.as_path(paths["md"]).read_text())
    print("Written: " + ", ".join(sorted(paths.values())))


def run(argv: list[str] | None = None) -> None:
    """The command line (`argv` as sys.argv: program name first)."""
    argv = sys.argv if argv is None else argv
    args = parse_args(argv[1:])
    from absl import logging

    from robult_jax import train

    train.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    try:
        compare(args)
    except interrupts.Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_status)
    except (ValueError, files.WorkdirBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
