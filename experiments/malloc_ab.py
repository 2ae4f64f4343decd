"""The train step under each host allocator, in alternate processes (README "Performance").

  .venv/bin/python experiments/malloc_ab.py --batch-sizes 128,512,2048 --rounds 2

For each batch size and round, one child process per `ROBULT_JAX_MALLOC`
choice (default: glibc, then mimalloc) builds the default `watch` model's
step as the benchmark does (`bench_jax.JaxBench`: real batches placed on the
device up front), compiles it, runs one untimed step, then times `--runs`
runs of k steps and prints the median milliseconds a step, with the system
time and page faults a step (`resource.getrusage`) over all timed runs and
in the last run alone (an allocator's heaps may still grow in the first
runs; training's steady state is the last run's), and the allocator it
really ran with (`host_memory.malloc_in_use`). A choice is a separate
process because an allocator is chosen when a process starts; alternating
them spreads a shared machine's drift over both.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]


def child(batch_size: int, architecture: str, runs: int) -> dict:
    from robult_jax import host_memory

    host_memory.reexec_with_fast_malloc()  # as the commands do, with this process's choice
    import bench_jax  # after the restart: JAX must start under the chosen allocator

    name = "watch" if architecture == "paper" else f"watch:{architecture}"
    bench = bench_jax.JaxBench(bench_jax.load_config(name, batch_size=batch_size, dtype="float32"))
    bench.compile()
    bench.run(1)  # untimed: the first step after building pays for fresh memory
    k = max(5, 4096 // batch_size)
    times, sys_s, faults = [], [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_SELF)
        times.append(bench.run(k))
        after = resource.getrusage(resource.RUSAGE_SELF)
        sys_s.append(after.ru_stime - before.ru_stime)
        faults.append(after.ru_minflt - before.ru_minflt)
    steps = runs * k
    return {
        "malloc": host_memory.malloc_in_use(),
        "step_ms": 1e3 * bench_jax.median(times),
        "step_ms_runs": [1e3 * t for t in times],
        # Over all timed runs, then the last run alone: an allocator's heaps may still
        # grow in the first runs, and training's steady state is the last run's.
        "sys_ms_per_step": 1e3 * sum(sys_s) / steps,
        "faults_per_step": sum(faults) / steps,
        "last_run_sys_ms_per_step": 1e3 * sys_s[-1] / k,
        "last_run_faults_per_step": faults[-1] / k,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    from robult_jax import host_memory  # light: no JAX in this parent process

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="128,512,2048")
    parser.add_argument("--architecture", default="paper", choices=("paper", "fused"))
    parser.add_argument("--choices", default="glibc,mimalloc", help="ROBULT_JAX_MALLOC values")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the choices")
    parser.add_argument("--runs", type=int, default=5, help="timed runs a process")
    parser.add_argument("--output", default="", help="JSON file for every row")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.architecture, args.runs)))
        return
    rows = []
    print(
        "| B | ROBULT_JAX_MALLOC | ran with | ms a step | sys ms a step | faults a step "
        "| last run: sys ms a step | last run: faults a step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for _ in range(args.rounds):
            for choice in args.choices.split(","):
                cmd = [sys.executable, os.path.abspath(__file__), "--child", str(batch_size),
                       "--architecture", args.architecture, "--runs", str(args.runs)]  # fmt: skip
                # Only the choice decides the child's allocator: nothing leaks in from here.
                env = {k: v for k, v in os.environ.items() if k not in host_memory.ENVIRONMENT}
                env[host_memory.CHOICE] = choice
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                row = dict(json.loads(out.stdout.splitlines()[-1]), batch_size=batch_size,
                           choice=choice)  # fmt: skip
                rows.append(row)
                print(
                    f"| {batch_size} | {choice} | {row['malloc']} | {row['step_ms']:.1f} | "
                    f"{row['sys_ms_per_step']:.1f} | {row['faults_per_step']:,.0f} | "
                    f"{row['last_run_sys_ms_per_step']:.1f} | "
                    f"{row['last_run_faults_per_step']:,.0f} |",
                    flush=True,
                )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
