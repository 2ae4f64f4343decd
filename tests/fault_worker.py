"""The CLI (`robult_jax.main`) with one fault injected; started as a process by test_faults.py.

  python tests/fault_worker.py --config ... --workdir ...   (env FAULT=<kind>:<arg>)

Faults (each hits the real process, with a real signal):
  kill_after_row:<step>       SIGKILL once metrics row <step> is written
  kill_after_best:<step>      SIGKILL once the best candidate of <step> is saved,
                              before its metrics row and periodic checkpoint
  kill_in_save:<dir>/<step>   SIGKILL inside Orbax's save of <dir>/<step>, after its
                              files are written and before the rename that commits it
  kill_in_final_eval          SIGKILL during the final evaluation
  signal_after_row:<step>:<SIGTERM|SIGINT>
                              the process signals itself once row <step> is written
"""

import os
import signal


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def _after(cls, name, hook):
    original = getattr(cls, name)

    def wrapped(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        hook(*args)
        return out

    setattr(cls, name, wrapped)


def inject(kind: str, arg: str) -> None:
    # Imported here, not at the top: pytest --doctest-modules imports this file,
    # and robult_jax.main defines absl flags that robult_jax.predict also defines.
    from orbax.checkpoint._src.path import atomicity

    from robult_jax import checkpointing, evaluate, metric_writer

    if kind == "kill_after_row":
        _after(metric_writer.MetricWriter, "write", lambda step, row: step == int(arg) and _kill())
    elif kind == "signal_after_row":
        at, signame = arg.split(":")
        send = lambda step, row: step == int(at) and os.kill(os.getpid(), signal.Signals[signame])
        _after(metric_writer.MetricWriter, "write", send)
    elif kind == "kill_after_best":
        _after(
            checkpointing.Checkpointer, "save_best", lambda step, *_: step == int(arg) and _kill()
        )
    elif kind == "kill_in_save":
        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize_or_die(self, *args, **kwargs):
            final = self.get_final()
            if f"{final.parent.name}/{final.name}" == arg:
                _kill()
            return await finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
    elif kind == "kill_in_final_eval":
        evaluate.evaluate_random_missing = lambda *a, **k: _kill()
    elif kind:
        raise SystemExit(f"unknown FAULT {kind!r}")


if __name__ == "__main__":
    from robult_jax import main

    kind, _, arg = os.environ.get("FAULT", "").partition(":")
    inject(kind, arg)
    main.run()
