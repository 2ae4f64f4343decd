"""SIGTERM and Ctrl-C (SIGINT): stop at a step boundary with a checkpoint, then exit.

Preemptible machines (cloud TPUs, spot VMs, SLURM) send SIGTERM and give the
process a few seconds; a user presses Ctrl-C. Either way the trainer should
leave a checkpoint of the step it reached, not of the last periodic one.

`StopSignals` installs handlers for the duration of a run. Inside
`deferred()` (the training loop) a signal only records itself and the loop
saves and stops after the current step, so a signal can never land in the
middle of a checkpoint write. Outside it (loading, compiling, the final
evaluation, when there is nothing new to save) the handler raises `Interrupted`
at once. A second signal during the deferred stop also raises at once: the user
insists. The CLI turns `Interrupted` into one line and the conventional exit
status 128 + signal number (143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The run stopped on a signal; `signum` says which."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _name(signum: int) -> str:
    return signal.Signals(signum).name


class StopSignals:
    """`with StopSignals() as stop:` handlers for SIGTERM and SIGINT (main thread only)."""

    def __init__(self, *, enabled: bool = True):
        self.signum: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}
        # Python delivers signals to the main thread only; elsewhere (a notebook
        # worker thread) the defaults stay.
        self._enabled = enabled and threading.current_thread() is threading.main_thread()

    def __enter__(self) -> StopSignals:
        if self._enabled:
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._deferring and self.signum is None:
            self.signum = signum  # the loop saves and stops after this step
            return
        raise Interrupted(
            signum,
            f"Stopped by {_name(signum)} outside a training step (the latest checkpoint holds "
            "all the training done); run the same command to resume.",
        )

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def stopped(self, step: int, checkpoint: str) -> Interrupted:
        """The exception for a deferred stop whose checkpoint of `step` is saved."""
        return Interrupted(
            self.signum,
            f"Stopped by {_name(self.signum)} at step {step}; checkpoint saved in {checkpoint}. "
            "Run the same command to resume.",
        )
