"""A profiler trace of chosen train steps (`train.profile_steps`, `train.profile_start`).

Training with `--config.train.profile_steps=5` traces 5 steps, by default
from step 11 on (`train.profile_start = 10` steps done first, so that
compilation and the first steps' warm-up stay out of it), with
`jax.profiler`: the host's Python and every XLA op of the compiled step on
every device, one `StepTraceAnnotation` per step. The trace goes to
`<workdir>/profile/plugins/profile/<time>/`:

- `<host>.xplane.pb`: TensorBoard's profile plugin or XProf
  (`pip install tensorboard-plugin-profile`, then
  `tensorboard --logdir <workdir>/profile`): trace viewer, op profile,
  memory profile;
- `perfetto_trace.json.gz`: drag it onto https://ui.perfetto.dev.

The trace waits for the steps before it (they run asynchronously), so it
holds the device work of exactly the traced steps. Each run writes a new
`<time>` folder, so a resumed run's trace never replaces an earlier one.
Traced steps are slower than the others (the profiler records every op),
which shows in `train/steps_per_sec` of their log rows; the export after
the last traced step is the "profile" phase of `timing_s`, not "train".
jax.profiler writes local files only, so with a workdir elsewhere
(`gs://...`) the trace is written to a local temporary folder and copied
there. A step range outside this invocation's steps (a resumed run, or
`--pause_at_step`) traces only the steps it overlaps.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import os
import pathlib
import re
import shutil
import tempfile
import time

import jax
from absl import logging
from etils import epath

from robult_jax import files

PROFILE_DIR = "profile"  # under the workdir


class StepTrace:
    """Traces the global steps [first, first + count) that fall in [run_start, run_stop).

    In the training loop:
        trace.begin(step, state)         # starts the trace at the first traced step
        state, metrics = train_step(state, batch, key)
        trace.end(step, (state, metrics))  # stops it after the last, once they are ready
    and `close()` when the loop ends, early or by an exception (it stops a
    trace still running and keeps what it recorded).
    """

    def __init__(self, workdir, *, first: int, count: int, run_start: int, run_stop: int):
        self.workdir = workdir
        self.start, self.stop = max(first, run_start), min(first + count, run_stop)
        self.enabled = count > 0 and self.start < self.stop
        self.trace_dir: str | None = None  # where jax.profiler writes (local), while tracing
        self._copy_to = None  # the workdir's profile folder, when not local
        self.export_s = 0.0  # seconds spent stopping the trace and writing it out
        self._step: contextlib.ExitStack | None = None

    @property
    def active(self) -> bool:
        return self.trace_dir is not None

    def begin(self, step: int, pending) -> None:
        """Before step `step`; `pending`: the arrays the previous steps are computing."""
        if not self.enabled:
            return
        if step == self.start:
            # Steps run asynchronously, the host ahead of the devices: without this
            # wait the trace would also hold the device work of earlier steps.
            jax.block_until_ready(pending)
            target = files.as_path(self.workdir) / PROFILE_DIR
            local = files.is_local(target)
            self.trace_dir = str(target) if local else tempfile.mkdtemp(prefix="robult_profile_")
            self._copy_to = None if local else target
            try:
                jax.profiler.start_trace(self.trace_dir, create_perfetto_trace=True)
            except RuntimeError as e:  # one trace at a time: the caller's own is running
                logging.warning("train.profile_steps: no trace written (%s); a jax.profiler "
                                "trace was already running in this process.", e)  # fmt: skip
                if not local:  # the temporary folder made for it, still empty
                    shutil.rmtree(self.trace_dir, ignore_errors=True)
                self.trace_dir, self.enabled = None, False
                return
        if self.active:
            self._step = contextlib.ExitStack()
            self._step.enter_context(jax.profiler.StepTraceAnnotation("train", step_num=step))

    def end(self, step: int, outputs) -> None:
        if self._step is not None:
            self._step.close()
            self._step = None
        if self.active and step == self.stop - 1:
            jax.block_until_ready(outputs)  # the last step's device work belongs in the trace
            self.close()

    def close(self) -> None:
        """Stops a running trace and writes it out (nothing if none runs)."""
        if self._step is not None:
            self._step.close()
            self._step = None
        if not self.active:
            return
        started = time.perf_counter()
        trace_dir, self.trace_dir = self.trace_dir, None
        jax.profiler.stop_trace()
        if self._copy_to is not None:
            for root, _, names in os.walk(trace_dir):
                rel = os.path.relpath(root, trace_dir)
                dest = self._copy_to / rel if rel != "." else self._copy_to
                dest.mkdir(parents=True, exist_ok=True)
                for name in names:
                    (dest / name).write_bytes(pathlib.Path(root, name).read_bytes())
            shutil.rmtree(trace_dir, ignore_errors=True)
        self.export_s += time.perf_counter() - started


def latest_trace(path) -> epath.Path:
    """The newest `*.trace.json.gz` of a workdir (or of its `profile` folder)."""
    root = files.as_path(path)
    if (root / PROFILE_DIR).exists():
        root = root / PROFILE_DIR
    runs = root / "plugins" / "profile"
    found = sorted(runs.glob("*/*.trace.json.gz")) if runs.exists() else []
    if not found:
        raise FileNotFoundError(
            f"no profiler trace under {runs}; train with --config.train.profile_steps=5 "
            "(and train.profile_start below train.num_steps - 5) to write one."
        )
    return found[-1]  # run folders are named by time, so the last is the newest


def op_summary(trace_file) -> dict:
    """Time of every XLA op in a trace, by program and op kind.

    The events that carry `hlo_module` / `hlo_op` (XLA's ops, on the host's
    threads for CPU, on the devices for GPU and TPU) are summed by program
    and by kind (the op's name without its `.N` suffix: `convolution`,
    `loop_fusion`, ...), each op's own time (a `while` op's less the ops of
    its body). Times are summed over threads and devices: on a
    multi-core CPU, ops that run side by side add up to more than the
    step's wall time, and an op that hands work to the thread pool (XLA:CPU's
    convolutions) may count only part of it. Steps are the
    `StepTraceAnnotation`s of the trace (`StepTrace` writes one per step).
    Returns {"steps": n, "programs": {module: {"total_us": t, "ops": [(kind,
    us, count), ...] largest first}}}.
    """
    with gzip.open(files.as_path(trace_file).open("rb")) as f:
        events = json.load(f).get("traceEvents", [])
    steps = {e["args"]["step_num"] for e in events if e.get("ph") == "X"
             and e.get("name") == "train" and "step_num" in e.get("args", {})}  # fmt: skip
    ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in (e.get("args") or {})
           and "hlo_module" in e["args"]]  # fmt: skip
    by_kind: dict = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    for e, self_us in _self_times(ops):
        kind = re.sub(r"\.\d+$", "", str(e["args"]["hlo_op"]))
        entry = by_kind[str(e["args"]["hlo_module"])][kind]
        entry[0] += self_us
        entry[1] += 1
    programs = {}
    for module, kinds in by_kind.items():
        rows = sorted(((k, us, n) for k, (us, n) in kinds.items()), key=lambda r: (-r[1], r[0]))
        programs[module] = {"total_us": sum(r[1] for r in rows), "ops": rows}
    programs = dict(sorted(programs.items(), key=lambda kv: -kv[1]["total_us"]))
    return {"steps": len(steps), "programs": programs}


def _self_times(ops: list[dict]):
    """(event, its duration less that of the ops nested in it on its thread), for each op.

    A `while` or `call` op's event encloses the events of the ops of its body;
    its own share is what is left.
    """
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    for thread in by_thread.values():
        thread.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        stack: list[list] = []  # [event, end, children's time]
        for e in thread:
            start, dur = float(e["ts"]), float(e.get("dur", 0.0))
            while stack and start >= stack[-1][1]:
                done = stack.pop()
                yield done[0], max(float(done[0].get("dur", 0.0)) - done[2], 0.0)
            if stack:
                stack[-1][2] += dur
            stack.append([e, start + dur, 0.0])
        for done in reversed(stack):
            yield done[0], max(float(done[0].get("dur", 0.0)) - done[2], 0.0)


def format_summary(summary: dict, top: int = 20) -> str:
    """The `op_summary` as text: per program, its `top` op kinds, per step where known."""
    steps = summary["steps"]
    per = max(steps, 1)
    unit = "ms/step" if steps else "ms"
    lines = [f"{steps} train steps traced" if steps else "no train steps marked in this trace"]
    for module, prog in summary["programs"].items():
        total = prog["total_us"]
        lines.append(f"\n{module}: {total / per / 1e3:.2f} {unit} of XLA ops")
        lines.append(f"  {unit:>9}  share  {'count':>7}  op kind")
        for kind, us, n in prog["ops"][:top]:
            lines.append(
                f"  {us / per / 1e3:9.3f}  {100 * us / total:4.1f}%  {n / per:7.1f}  {kind}"
            )
        if len(prog["ops"]) > top:
            rest = sum(us for _, us, _ in prog["ops"][top:])
            lines.append(f"  {rest / per / 1e3:9.3f}  {100 * rest / total:4.1f}%  "
                         f"{'':>7}  ({len(prog['ops']) - top} more kinds)")  # fmt: skip
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
    """`robult-jax profile WORKDIR`: the XLA ops of a run's newest trace, by time."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="robult-jax profile", description=run.__doc__.split("\n")[0]
    )
    parser.add_argument("workdir", metavar="WORKDIR", help="a run trained with train.profile_steps")
    parser.add_argument("--top", type=int, default=20, help="op kinds shown per program")
    args = parser.parse_args((sys.argv if argv is None else argv)[1:])
    if args.top < 1:
        parser.error(f"--top {args.top}: give the number of op kinds to show, 1 or more")
    try:
        trace_file = latest_trace(args.workdir)
        summary = op_summary(trace_file)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{trace_file}\n{format_summary(summary, args.top)}")
