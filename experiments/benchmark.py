"""Throughput benchmark of the Robult train step: JAX against a PyTorch reference.

  .venv/bin/python experiments/benchmark.py [--quick] [--output out.json]
      [--batch-sizes 64,128,...] [--datasets watch,mfeat,av_digits,synthetic]
      [--architectures paper,fused] [--dtype float32|bfloat16] [--torch/--no-torch]
      [--repeats N] [--target-seconds S] [--pipeline-seconds S] [--modalities 2,3,...,8]

Runs on any JAX backend (CPU, GPU, TPU; the PyTorch reference only beside a
CPU backend). For the packaged config of each dataset and architecture
(`configs.load("watch")`, `"watch:fused"`), at each global batch size
(labeled:unlabeled 1:3, as the default 32:96), it measures:

- compile time split into trace, lower and compile;
- train-step time (median over `--repeats` timed runs after warm-up, each
  run long enough to be timed, on batches from the real sampler placed on
  the devices up front) and samples/s;
- FLOPs of one step (XLA cost analysis, every iteration of its loops
  counted: `bench_jax.executed_flops`), the achieved FLOP/s, and its share
  of this machine's float32 matmul peak, measured in the same process and
  interleaved with the step (`bench_jax.MatmulPeak`);
- the contrastive term alone (B x B x M) against the whole step;
- XLA's memory footprint of the step, the peak device memory (or process RSS);
- the input pipeline: steps/s on pre-placed batches, sampling and placing
  each step in the training thread, and `robult_jax.data.pipeline.TrainBatches`
  (train.py's loop, prefetch in a thread), in timed runs of `--pipeline-seconds`;
- evaluation throughput over every subset of modalities (`evaluate_subsets`);
- with PyTorch installed, the same step in PyTorch eager and `torch.compile`
  (experiments/torch_reference.py says why it is a fair reference), in a
  child process of its own (experiments/torch_worker.py says why) and timed
  interleaved with JAX (jax, eager, compile, jax, ...) so that the ratios hold
  on a noisy machine;
- how step time grows with the number of modalities (2..8 identical (100, 3)
  series on the synthetic dataset, the watch model; `--quick`: the synthetic model).

Prints tables and writes everything, with machine info, to `--output` (JSON).
Like the training command, it restarts itself once with mimalloc or glibc's
huge pages for XLA's scratch memory where that helps (robult_jax/host_memory.py;
`ROBULT_JAX_MALLOC=glibc` or `off` measures without mimalloc); the JSON records
which, and the PyTorch child process inherits the same allocator.
`--quick`: the synthetic dataset, "paper", batch sizes 64 and 128, 2 repeats,
no PyTorch unless `--torch`; seconds, for tests/test_benchmark.py.
`--synthetic-inputs`: each dataset's model and step on synthetic data of
the same shapes, classes and split sizes (`bench_jax.STAND_INS`; watch and
mfeat), for machines without the dataset packages: a GPU machine with only
JAX, Flax, Optax and Orbax installed needs ml-collections beside them
(experiments/device_benchmark.sh). Step timings do not depend on the
values; the JSON says which inputs each config ran on.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # bench_jax, torch_reference; robult_jax

if __name__ == "__main__":  # as the training command does, before JAX starts
    from robult_jax import host_memory

    host_memory.reexec_with_fast_malloc()

import bench_jax  # noqa: E402
import jax  # noqa: E402
import torch_worker  # noqa: E402

from robult_jax import host_memory  # noqa: E402

DATASETS = ("watch", "mfeat", "av_digits", "synthetic")
MEMORY_HEADROOM = 0.8  # skip a batch size whose XLA footprint exceeds this share of free memory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda s: tuple(int(x) for x in s.split(",") if x)
    names = lambda s: tuple(x for x in s.split(",") if x)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run, for tests")
    p.add_argument("--output", default="benchmark.json")
    p.add_argument("--batch-sizes", type=ints, default=None, help="default 64..8192")
    p.add_argument("--datasets", type=names, default=None, help=f"of {','.join(DATASETS)}")
    p.add_argument("--architectures", type=names, default=None, help="paper,fused")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    p.add_argument("--modalities", type=ints, default=None, help="'' skips; default 2..8")
    p.add_argument("--modality-batch", type=int, default=256)
    p.add_argument("--target-seconds", type=float, default=None, help="length of one timed run")
    p.add_argument(
        "--pipeline-seconds", type=float, default=None,
        help="length of one timed run of the input-pipeline comparison (default 1.0): each "
        "starts a TrainBatches, whose first group of batches is made before the first step",
    )  # fmt: skip
    p.add_argument(
        "--synthetic-inputs", action="store_true",
        help="each dataset's model on synthetic data of its shapes (no dataset packages needed)",
    )  # fmt: skip
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(
        batch_sizes=(64, 128) if quick else tuple(2**k for k in range(6, 14)),
        datasets=("synthetic",) if quick else DATASETS,
        architectures=("paper",) if quick else ("paper", "fused"),
        torch=not quick, repeats=2 if quick else 5, modalities=(2,) if quick else range(2, 9),
        target_seconds=0.02 if quick else 0.5, pipeline_seconds=0.02 if quick else 1.0,
    )  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tuple(value) if isinstance(value, range) else value)
    if args.synthetic_inputs:
        missing = [d for d in args.datasets if d not in (*bench_jax.STAND_INS, "synthetic")]
        if missing:
            p.error(
                f"--synthetic-inputs: no synthetic stand-in for {', '.join(missing)}; "
                f"pass --datasets with some of {','.join((*bench_jax.STAND_INS, 'synthetic'))}"
            )
    return args


def threads() -> int:
    """Cores this process may use: XLA's CPU client sizes its thread pool by them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_torch(wanted: bool):
    """(a torch_worker.TorchWorker or None, why not).

    The PyTorch steps run in a child process (torch_worker says why), started
    here with this process's environment and thread count.

    OpenMP threads wait passively (unless OMP_WAIT_POLICY is set): spinning
    threads stall on a descheduled peer whenever the machine runs anything else,
    which made 2-thread eager steps 10-20x slower than 1-thread ones on the
    shared 2-core machine of this project (passive: 2 threads faster than 1).
    """
    if not wanted:
        return None, "not asked (--no-torch, or --quick without --torch)"
    if jax.default_backend() != "cpu":
        return None, f"the torch reference runs on CPU and JAX on {jax.default_backend()}"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP
    if importlib.util.find_spec("torch") is None:
        return None, "PyTorch not installed; pip install torch==2.13.0"
    try:
        return torch_worker.TorchWorker(threads()), ""
    except RuntimeError as e:
        return None, f"PyTorch did not start ({str(e).splitlines()[-1]}); pip install torch==2.13.0"


def machine_info(torch_ref) -> dict:
    dev = jax.devices()[0]
    info = {
        "jax": jax.__version__, "backend": jax.default_backend(), "device_kind": dev.device_kind,
        "device_count": jax.device_count(), "cpu_count": os.cpu_count(), "threads": threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        "processor": platform.processor(),
        # How XLA's per-step scratch memory is allocated: "mimalloc" (the CLI's default
        # where installed), "glibc+hugetlb" or "glibc" (ROBULT_JAX_MALLOC=glibc / off).
        "malloc": host_memory.malloc_in_use(),
        "glibc_malloc_hugetlb": host_memory.hugepages_on(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "transparent_hugepages": host_memory.thp_mode(),
        # Set on VMs like this project's: a step after other work pays for its memory.
        "page_reporting_order": host_memory.page_reporting_order(),
    }  # fmt: skip
    if torch_ref is not None:
        info.update(torch_ref.info, torch_process="a child process (experiments/torch_worker.py)")
    return info


def memory_now() -> dict:
    """Peak device memory where the backend reports it, else this process's peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"device_peak_bytes": int(stats["peak_bytes_in_use"])}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes; a process-wide peak, so it only ever grows.
    return {"process_peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


def free_memory() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def interleaved(runs: dict, repeats: int, target_s: float) -> tuple[dict, dict]:
    """Median-ready step times of several contenders, alternating them every repeat.

    Each `runs[name](k)` runs k steps and returns seconds per step. Two warm-up
    calls each, then k is chosen so that one timed run lasts about `target_s`;
    the repeats then go jax, eager, compile, jax, ... so that a slow patch of a
    shared machine hits every contender alike. Each timed run follows one
    untimed step of the same contender: training runs its steps back to back,
    and the first step after another contender's run pays for memory that the
    other one freed. On this project's machine (a Firecracker VM whose kernel
    reports freed pages to the host, `page_reporting`), the first JAX step at
    B = 2048 after a PyTorch step took 1.45 to 1.76 s against 0.59 to 0.60 s
    for the next one, all of the difference system time (2.4 s against 0.16 s
    of it, the same 1,970 page faults); timed runs of one step (k = 1 at large
    batches) measured that first step only.
    """
    steps = {}
    for name, run in runs.items():
        run(1)
        steps[name] = max(1, min(200, round(target_s / run(1))))
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            run(1)  # untimed: re-touch this contender's memory after the others' runs
            times[name].append(run(steps[name]))
    return times, steps


def bench_batch(config, args, peak, torch_ref, torch_note: str) -> tuple:
    """One config at one batch size: the row of the tables, and its JaxBench."""
    jb = bench_jax.JaxBench(config)
    b = jb.batch_size
    row = {"batch_size": b, "labeled": jb.sampler.labeled_batch, "num_params": jb.num_params}
    row["compile"] = jb.compile()
    row.update(jb.analysis())
    footprint = row.get("xla_argument_bytes", 0) + row.get("xla_temp_bytes", 0)
    if footprint > MEMORY_HEADROOM * free_memory():
        row["skipped"] = (
            f"XLA footprint {footprint / 2**30:.1f} GiB > {MEMORY_HEADROOM:.0%} of free"
        )
        return row, None
    runs = {"jax": jb.run, "matmul_peak": peak.run}
    if torch_ref is not None:
        num_params = torch_ref.build(jb.cfg, jb.spec, jb.host_batches)
        assert set(num_params.values()) == {jb.num_params}, (num_params, jb.num_params)
        runs.update({name: torch_ref.runner(name) for name in torch_worker.VARIANTS})
        start = time.perf_counter()
        runs["torch_compile"](1)
        row["torch_compile_first_call_s"] = time.perf_counter() - start
    else:
        row["torch"] = f"skipped: {torch_note}"
    times, steps = interleaved(runs, args.repeats, args.target_seconds)
    row["matmul_peak"] = peak.summary(times.pop("matmul_peak"))
    for name, ts in times.items():
        med = bench_jax.median(ts)
        row[name] = {"step_s": med, "samples_per_s": b / med, "steps_per_run": steps[name],
                     "step_s_all": ts}  # fmt: skip
    for name in ("torch_eager", "torch_compile"):
        if name in row:
            row[f"ratio_jax_over_{name}"] = row["jax"]["samples_per_s"] / row[name]["samples_per_s"]
    row["flops_per_s"] = row["flops"] / row["jax"]["step_s"]
    row["share_of_peak"] = row["flops_per_s"] / row["matmul_peak"]["flops_per_s"]
    spec, cfg = jb.spec, jb.cfg
    contrastive = bench_jax.contrastive_term(
        b, len(spec.modalities), cfg.model.embed_dim, spec.num_outputs, args.repeats
    )
    contrastive["share_of_step"] = contrastive["time_s"] / row["jax"]["step_s"]
    row["contrastive"] = contrastive
    row["pipeline"] = bench_pipeline(jb, args)
    row["memory"] = memory_now()
    return row, jb


def bench_pipeline(jb, args) -> dict:
    """Steps/s with batches on the devices already, sampled each step, and via TrainBatches.

    Timed runs of `--pipeline-seconds`, longer than the step's: every run
    starts a new TrainBatches, as a training run does once, and at B = 128
    its first group (8 batches) is sampled before the first step; in runs of
    0.3 s that start-up alone is 1 to 2% of the run.
    """
    runs = {"preloaded": jb.run, "sampled_each_step": jb.run_sampled}
    probe = jb.run_pipeline(1, jb.cfg.train.prefetch)
    out = {"prefetch": jb.cfg.train.prefetch}
    if isinstance(probe, str):
        out["train_batches"] = probe
    else:
        runs["train_batches"] = lambda k: jb.run_pipeline(k, jb.cfg.train.prefetch)
    times, _ = interleaved(runs, args.repeats, args.pipeline_seconds)
    out.update({f"{name}_steps_per_s": 1 / bench_jax.median(ts) for name, ts in times.items()})
    return out


def bench_config(name: str, args, peak, torch_ref, torch_note: str) -> dict:
    inputs = "synthetic stand-in (bench_jax.STAND_INS)" if args.synthetic_inputs else "the dataset"
    result = {"config": name, "dtype": args.dtype, "inputs": inputs, "batches": []}
    for b in args.batch_sizes:
        config = bench_jax.load_config(
            name, batch_size=b, dtype=args.dtype, synthetic_inputs=args.synthetic_inputs
        )
        row, jb = bench_batch(config, args, peak, torch_ref, torch_note)
        result["batches"].append(row)
        print(f"  {name} B={b}: {_brief(row)}", flush=True)
        if jb is not None and "eval" not in result:
            result["eval"] = jb.eval_throughput(args.repeats)
    return result


def bench_modalities(args, peak) -> list[dict]:
    """Step time against the number of modalities at one batch size, JAX only."""
    base, shape = ("synthetic", (16, 3)) if args.quick else ("watch", (100, 3))
    rows = []
    for arch in args.architectures:
        for m in args.modalities:
            config = bench_jax.load_config(
                f"{base}:{arch}", batch_size=args.modality_batch, dtype=args.dtype, modalities=m,
                series_shape=shape,
            )  # fmt: skip
            jb = bench_jax.JaxBench(config)
            row = {"architecture": arch, "modalities": m, "num_params": jb.num_params}
            row["compile"] = jb.compile()
            row.update(jb.analysis())
            runs = {"jax": jb.run, "matmul_peak": peak.run}
            times, _ = interleaved(runs, args.repeats, args.target_seconds)
            row["matmul_peak"] = peak.summary(times["matmul_peak"])
            row["step_s"] = bench_jax.median(times["jax"])
            row["share_of_peak"] = row["flops"] / row["step_s"] / row["matmul_peak"]["flops_per_s"]
            rows.append(row)
            print(f"  modalities {arch} M={m}: {row['step_s'] * 1e3:.1f} ms/step", flush=True)
    return rows


def _brief(row: dict) -> str:
    """One progress line per batch size: the table's main figures, in case the run is cut."""
    if "skipped" in row:
        return row["skipped"]
    parts = [f"jax {row['jax']['samples_per_s']:.0f}/s"]
    for k in ("torch_eager", "torch_compile"):
        if k in row:
            ratio = row[f"ratio_jax_over_{k}"]
            parts.append(f"{k} {row[k]['samples_per_s']:.0f}/s (jax x{ratio:.2f})")
    c = row["compile"]
    parts.append(f"{row['share_of_peak']:.2f} of peak")
    parts.append(f"compile {c['trace_s']:.1f}+{c['lower_s']:.1f}+{c['compile_s']:.1f} s")
    return ", ".join(parts)


def print_tables(result: dict) -> None:
    peak = result["matmul_peak"]
    print(f"\nfloat32 matmul peak (jit, {peak['chain']} x {peak['n']}^2): "
          f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s alone at the start; each row's share is "
          "of the peak measured interleaved with its step (column 'peak')")  # fmt: skip
    print(f"torch: {result['torch']}")
    head = ("config", "B", "jax/s", "eager/s", "compile/s", "jax/eager", "jax/comp", "ms/step",
            "x per 2B", "GFLOP", "GFLOP/s", "peak", "of peak", "contr.", "trace", "lower",
            "compile", "XLA MiB")  # fmt: skip
    print("\n" + " | ".join(head))
    for res in result["configs"]:
        prev = None
        for r in res["batches"]:
            if "skipped" in r:
                print(f"{res['config']} | {r['batch_size']} | {r['skipped']}")
                continue
            get = lambda k, r=r: f"{r[k]['samples_per_s']:.0f}" if k in r else "-"
            ratio = lambda k, r=r: f"{r[k]:.2f}" if k in r else "-"
            step = r["jax"]["step_s"]
            c = r["compile"]
            cells = (
                res["config"], r["batch_size"], get("jax"), get("torch_eager"),
                get("torch_compile"), ratio("ratio_jax_over_torch_eager"),
                ratio("ratio_jax_over_torch_compile"), f"{step * 1e3:.1f}",
                "-" if prev is None else f"{step / prev:.2f}", f"{r['flops'] / 1e9:.2f}",
                f"{r['flops_per_s'] / 1e9:.1f}", f"{r['matmul_peak']['flops_per_s'] / 1e9:.0f}",
                f"{r['share_of_peak']:.2f}",
                f"{r['contrastive']['share_of_step']:.2f}", f"{c['trace_s']:.1f}",
                f"{c['lower_s']:.1f}", f"{c['compile_s']:.1f}",
                f"{(r.get('xla_temp_bytes', 0) + r.get('xla_argument_bytes', 0)) / 2**20:.0f}",
            )  # fmt: skip
            print(" | ".join(str(x) for x in cells))
            prev = step
    print("\ninput pipeline, steps/s: config | B | preloaded | sampled each step | TrainBatches")
    for res in result["configs"]:
        for r in res["batches"]:
            if "pipeline" in r:
                p = r["pipeline"]
                tb = p.get("train_batches_steps_per_s", p.get("train_batches"))
                tb = f"{tb:.1f}" if isinstance(tb, float) else tb
                print(f"{res['config']} | {r['batch_size']} | {p['preloaded_steps_per_s']:.1f} | "
                      f"{p['sampled_each_step_steps_per_s']:.1f} | {tb}")  # fmt: skip
    print("\nevaluation (every subset): config | rows x subsets | samples/s")
    for res in result["configs"]:
        if "eval" in res:
            e = res["eval"]
            print(f"{res['config']} | {e['rows']} x {e['subsets']} | {e['samples_per_s']:.0f}")
    if result["modality_scaling"]:
        b = result["args"]["modality_batch"]
        print(f"\nmodalities (B = {b}): arch | M | params | ms/step | GFLOP | of peak | compile s")
        for r in result["modality_scaling"]:
            print(f"{r['architecture']} | {r['modalities']} | {r['num_params']} | "
                  f"{r['step_s'] * 1e3:.1f} | {r['flops'] / 1e9:.2f} | {r['share_of_peak']:.2f} | "
                  f"{sum(r['compile'].values()):.1f}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch_ref, torch_note = load_torch(args.torch)
    started = time.time()
    n = 512 if args.quick else 2048
    peak_bench = bench_jax.MatmulPeak(n, 2 if args.quick else 4)
    peak = peak_bench.measure(max(args.repeats, 3))
    print(f"matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    configs = []
    for dataset in args.datasets:
        for arch in args.architectures:
            name = dataset if arch == "paper" else f"{dataset}:{arch}"
            configs.append(bench_config(name, args, peak_bench, torch_ref, torch_note))
    result = {
        "machine": machine_info(torch_ref),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "args": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()},
        "torch": torch_note
        or f"PyTorch {torch_ref.info['torch']}, {threads()} threads, in a child process",
        "matmul_peak": peak, "configs": configs,
        "modality_scaling": bench_modalities(args, peak_bench),
        "wall_s": time.time() - started,
    }  # fmt: skip
    if torch_ref is not None:
        torch_ref.close()
    print_tables(result)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.output} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
