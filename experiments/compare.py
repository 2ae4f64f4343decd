"""Compare methods over seeds on one dataset; writes the table that README quotes.

  python experiments/compare.py --dataset watch --methods robult,supervised --seeds 0,1,2

Each (method, seed) run goes to `<workdir>/<method>/seed<k>` and is skipped if
its results.json already exists (so an interrupted comparison resumes). The
config of method `robult` is `configs/<dataset>.py`; any other method `m` uses
`configs/<dataset>_<m>.py`. A method name ending in `_fused` (`robult_fused`,
`supervised_fused`) takes the same config with the "fused" architecture
(`get_config("fused")`); the others use the paper's. Extra `--set a.b=v`
overrides apply to every run.

Outputs in `<workdir>`: comparison.md (mean +/- std over seeds, with the
dataset, label rate, missing protocol, seeds and commit), comparison.json and
comparison.png (accuracy vs missing rate, one line per method).

`--split validation` evaluates on the validation split instead of test: use it
to choose hyper-parameters, and only then run on test.
"""

import argparse
import ast
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import logging  # noqa: E402

from robult_jax import report, train  # noqa: E402


def load_config(dataset: str, method: str):
    base, fused, _ = method.rpartition("_fused")
    base = base if fused else method
    name = dataset if base == "robult" else f"{dataset}_{base}"
    path = os.path.join(ROOT, "configs", f"{name}.py")
    if not os.path.exists(path):
        raise SystemExit(f"error: no config {path} for method {method!r} on {dataset!r}.")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("fused" if fused else "paper")
    config.method = method
    return config


def apply_override(config, assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    if not raw:
        raise SystemExit(f"error: --set {assignment!r} is not of the form a.b=value.")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    node = config
    *path, leaf = key.split(".")
    for p in path:
        node = node[p]
    if leaf not in node:
        raise SystemExit(f"error: --set {key}: no such config field.")
    node[leaf] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="watch")
    parser.add_argument("--methods", default="robult,supervised")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default=None, help="default: runs/compare_<dataset>")
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--set", action="append", default=[], metavar="A.B=V")
    parser.add_argument("--rates", default="0,0.5", help="missing rates shown in the table")
    parser.add_argument(
        "--fixed_label_split",
        action="store_true",
        help="keep data.label_seed from the config instead of setting it to the seed",
    )
    args = parser.parse_args()
    train.enable_compilation_cache()
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    workdir = args.workdir or os.path.join(ROOT, "runs", f"compare_{args.dataset}")
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    runs: dict[str, list[dict]] = {}
    for method in methods:
        runs[method] = []
        for seed in seeds:
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
            run_dir = os.path.join(workdir, method, f"seed{seed}")
            path = os.path.join(run_dir, "results.json")
            if not os.path.exists(path):
                print(f"[compare] {method} seed={seed} -> {run_dir}", flush=True)
                train.train_and_evaluate(config, run_dir)
            with open(path) as f:
                runs[method].append(json.load(f))

    rates = tuple(float(r) for r in args.rates.split(","))
    first = runs[methods[0]][0]
    metric = first.get("primary_metric", "accuracy")
    table = report.comparison_table(runs, rates=rates, metric=metric)
    header = (
        f"Dataset: {first.get('variant', first['dataset'])}; split: {args.split}; "
        f"label rate: {first['label_rate']}; seeds: {seeds} (each seed sets the model init, "
        f"data order{'' if args.fixed_label_split else ' and the labeled subset'}; "
        f"missing masks: seeds {first['mask_seeds']} per run); commit of the runs: "
        f"{', '.join(sorted({r['commit'] for rs in runs.values() for r in rs}))}.\n"
        f"Cells: {metric}, mean +/- std over seeds. Subset rows: only those modalities at test "
        "time; 'missing p' rows: each modality of each test sample absent with probability p "
        "(at least one kept).\n\n"
    )
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "comparison.md"), "w") as f:
        f.write(header + table + "\n")
    with open(os.path.join(workdir, "comparison.json"), "w") as f:
        json.dump({m: r for m, r in runs.items()}, f, indent=1)
    report.plot_comparison(os.path.join(workdir, "comparison.png"), runs, metric=metric)
    print(header + table)


if __name__ == "__main__":
    main()
