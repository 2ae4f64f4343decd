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


class MetricWriter:
    """Appends `{"step": s, key: value, ...}` lines to `<workdir>/metrics.jsonl`."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._main = jax.process_index() == 0

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self._main:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: _to_json(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


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
