"""One metrics writer: JSON lines in the workdir, optional TensorBoard event files,
and a terminal progress bar.

Keys are `train/...` and `eval/...`. Only the process with index 0 writes, so
multi-host runs produce one file.

`metrics.jsonl` is the record (read by the tests and reports). TensorBoard
event files in `<workdir>/tensorboard/` are a view of the same rows for
`tensorboard --logdir runs/`, written with tensorboardX because it needs
neither TensorFlow nor PyTorch; without it installed the run warns once and
writes JSON lines only.

Remote workdirs (`gs://...`): metrics.jsonl is rewritten whole at each row
(object stores cannot append; `files.Appender`). TensorBoard files go through
tensorboardX's own writers, which know `gs://` (with `google-cloud-storage`
installed) and `s3://` (with `boto3`); for any other remote scheme, or without
that library, the run warns once and writes metrics.jsonl only.
"""

import json
import math
import numbers
import os
import sys
import time

import jax
from absl import logging

from robult_jax import files
from robult_jax import workdir as workdir_lib

# tensorboardX writes events from a background thread and flushes them to disk
# every `_FLUSH_SECS`: a live TensorBoard lags by at most that, and a killed run
# can lose that much of its event files (never of metrics.jsonl).
_FLUSH_SECS = 5


class MetricWriter:
    """Appends `{"step": s, key: value, ...}` lines to `<workdir>/metrics.jsonl`.

    `resume_step`: the step the run restarts from. Rows after it were written
    by an attempt that was killed before its next checkpoint; the resumed run
    writes them again, so they are dropped first (as is a line cut short by
    the kill), and the file holds one row per step.

    `tensorboard`: also write each row's values as scalars, same keys, into
    `<workdir>/tensorboard/`. Event files cannot be edited, so the events of
    steps after `resume_step` are hidden instead: the new event file starts
    with a purge marker at `resume_step + 1`, and TensorBoard drops the
    events at and after that step that earlier files hold.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0, tensorboard: bool = False):
        path = files.as_path(workdir) / "metrics.jsonl"
        self.path = os.fspath(path)
        self._main = jax.process_index() == 0
        self._tb = None
        self._hparams_written = False
        self._out: files.Appender | None = None
        if self._main:
            kept = b""
            if path.exists():
                lines = path.read_bytes().splitlines()
                rows = [line for line in lines if _step_of(line) <= resume_step]
                kept = b"".join(line + b"\n" for line in rows)
                if len(rows) != len(lines):
                    files.atomic_write(path, kept)
            self._out = files.Appender(path, initial=kept)
        if self._main and tensorboard:
            logdir = files.as_path(workdir) / "tensorboard"
            # An earlier attempt on this workdir already recorded the hyper-parameters
            # (steps <= resume_step are never purged, and write_hparams writes at 0).
            self._hparams_written = logdir.is_dir() and any(
                p.name.startswith("events.out.tfevents") for p in logdir.iterdir()
            )
            self._tb = _summary_writer(os.fspath(logdir), resume_step)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self._main:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: _to_json(v) for k, v in metrics.items()})
        self._out.append((json.dumps(record) + "\n").encode())
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step), walltime=record["time"])

    def write_hparams(self, config_dict: dict) -> None:
        """Records the flattened config (`"optim.learning_rate": 1e-3`, ...) in TensorBoard.

        Once per event directory: as a text table (TEXT tab) and as the run's
        hyper-parameters (HPARAMS tab, next to its scalars). No-op without
        TensorBoard output.
        """
        if self._tb is None or self._hparams_written:
            return
        hparams = _tensorboardx().summary.hparams

        flat = {k: _hparam_value(v) for k, v in workdir_lib.flatten(config_dict).items()}
        rows = "".join(f"| `{k}` | {str(v).replace('|', '&#124;')} |\n" for k, v in flat.items())
        self._tb.add_text("config", "| field | value |\n|---|---|\n" + rows, 0)
        # Session start info alone: TensorBoard lists this run under HPARAMS with
        # these values and takes its metrics from the run's own scalar tags.
        _, session_start, _ = hparams({k: v for k, v in flat.items() if v is not None}, {})
        self._tb.file_writer.add_summary(session_start, 0)
        self._hparams_written = True

    def close(self) -> None:
        """Writes out and closes the event file; safe to call more than once."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboardx():
    """The tensorboardX package, imported without importing PyTorch.

    tensorboardX 2.6 imports torch (where installed) at module level only for
    its type hints; that import is ~1.3 s of a run's start-up here and nothing
    of what this writer calls uses it. Hiding torch while tensorboardX's
    modules load keeps it out (unless this process imported torch already);
    `import torch` works as usual afterwards.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX
    else:
        sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
        try:
            import tensorboardX
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    import tensorboardX.record_writer
    import tensorboardX.summary

    return tensorboardX


def _summary_writer(logdir: str, resume_step: int):
    """A tensorboardX SummaryWriter on `logdir`, or None (and a warning) where it cannot write."""
    try:
        SummaryWriter = _tensorboardx().SummaryWriter
    except ImportError:
        logging.warning(
            "train.tensorboard is on but tensorboardX is not installed (`pip install "
            "tensorboardX`): writing metrics.jsonl only."
        )
        return None
    why_not = _remote_tensorboard_unsupported(logdir)
    if why_not:
        logging.warning(
            "train.tensorboard is on but %s: writing metrics.jsonl only (it holds the same rows).",
            why_not,
        )
        return None
    # purge_step: TensorBoard discards the earlier files' events at steps >= it,
    # the ones this run writes again (metrics.jsonl drops the same rows).
    # The suffix: tensorboardX names a file by the second it was opened in and
    # opens it with "wb", so a resume within that second would overwrite the
    # earlier file; nanoseconds keep the names distinct and in order.
    return SummaryWriter(
        logdir,
        purge_step=resume_step + 1,
        flush_secs=_FLUSH_SECS,
        filename_suffix=f".{time.time_ns()}",
    )


def _remote_tensorboard_unsupported(logdir: str) -> str | None:
    """Why tensorboardX cannot write event files under a remote `logdir` (None: it can).

    tensorboardX writes local paths with `open`, and `gs://` / `s3://` with its
    own record writers, which need google-cloud-storage / boto3; it has no other
    remote scheme (an unknown one would become a local directory named "xx:").
    """
    if files.is_local(logdir):
        return None
    record_writer = _tensorboardx().record_writer

    scheme = logdir.split("://", 1)[0]
    needs = {"gs": ("GCS_ENABLED", "google-cloud-storage"), "s3": ("S3_ENABLED", "boto3")}
    if scheme not in needs:
        return f"tensorboardX cannot write to {scheme}:// paths"
    flag, package = needs[scheme]
    if not getattr(record_writer, flag, False):
        return f"tensorboardX needs `pip install {package}` to write to {scheme}:// paths"
    return None


def _hparam_value(value):
    """bool, number and str as they are (TensorBoard can sort and filter them); the rest as text."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return json.dumps(value, default=str) if isinstance(value, list | tuple) else str(value)


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
