"""One metrics writer: JSON lines in the workdir, plus a terminal progress bar.

Keys are `train/...` and `eval/...`. Only the process with index 0 writes, so
multi-host runs produce one file.
"""

import json
import math
import os
import sys
import time

import jax

from robult_jax import files


class MetricWriter:
    """Appends `{"step": s, key: value, ...}` lines to `<workdir>/metrics.jsonl`.

    `resume_step`: the step the run restarts from. Rows after it were written
    by an attempt that was killed before its next checkpoint; the resumed run
    writes them again, so they are dropped first (as is a line cut short by
    the kill), and the file holds one row per step.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._main = jax.process_index() == 0
        if self._main and os.path.exists(self.path):
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
            kept = [line for line in lines if _step_of(line) <= resume_step]
            if len(kept) != len(lines):
                files.atomic_write(self.path, b"".join(line + b"\n" for line in kept))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self._main:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: _to_json(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _step_of(line: bytes) -> float:
    """The step of a metrics row; inf for a line that is not one (cut short by a kill)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _to_json(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class Progress:
    """tqdm bar with loss and throughput; silent when disabled or not process 0."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._bar = None
        if enabled and jax.process_index() == 0:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc="train",
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, n: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
