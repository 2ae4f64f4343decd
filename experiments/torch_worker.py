"""The PyTorch reference of experiments/benchmark.py, in a process of its own.

The benchmark alternates timed runs of the JAX step and of the two PyTorch
steps (`interleaved`), so that a slow patch of a shared machine hits every
contender alike. Here each framework runs in a process of its own, as a
user's program would: one malloc heap, allocator settings and thread pools
each, with the same environment, thread count and batches; only the pipe
between them is shared, and timing happens on each side around its own
steps (`TorchStep.run`), so the pipe's latency is not in any step time.

Why: with PyTorch's steps in the benchmark's own process the JAX step's
speed depended on what ran before it (watch, paper, B = 512, 2026-12-04:
2,334 and 3,446 samples/s without and with huge pages for malloc in a
benchmark without PyTorch, 2,924 and 2,157 with PyTorch's steps in the same
process). Most of that turned out not to be the shared heap: on this
project's machine (a Firecracker VM whose kernel hands freed pages back to
the host, `page_reporting`), whichever step runs first after another's
freed memory pays for faulting it back, in a child process too, which is
why `benchmark.interleaved` now runs one untimed step before each timed run.

`TorchWorker(threads)` starts the process (multiprocessing "spawn": a fresh
interpreter, nothing of the parent's JAX state), `build(cfg, spec, batches)`
makes its eager and `torch.compile` steps of one config and batch, and
`runner(name)` gives a `run(k) -> seconds per step` like `JaxBench.run`.
"""

import multiprocessing
import traceback

VARIANTS = {"torch_eager": False, "torch_compile": True}  # name -> compiled


def _serve(conn, threads: int) -> None:
    """The worker's loop: one request, one ("ok", value) or ("error", traceback) reply."""
    steps = {}
    while True:
        request = conn.recv()
        op, args = request[0], request[1:]
        if op == "close":
            conn.close()
            return
        try:
            if op == "hello":
                import torch_reference  # noqa: PLC0415 (the parent may not have torch)

                torch_reference.set_threads(threads)
                torch = torch_reference.torch
                value = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
            elif op == "build":
                import torch_reference  # noqa: PLC0415

                cfg, spec, host_batches = args
                steps.clear()  # the previous config's models, before the next ones are made
                steps.update({
                    name: torch_reference.TorchStep(cfg, spec, host_batches, compiled=compiled)
                    for name, compiled in VARIANTS.items()
                })  # fmt: skip
                value = {name: step.num_params for name, step in steps.items()}
            elif op == "run":
                name, k = args
                value = steps[name].run(k)
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send(("ok", value))
        except Exception:  # noqa: BLE001 (sent to the parent, which raises it)
            conn.send(("error", traceback.format_exc()))


class TorchWorker:
    """The PyTorch steps in a child process; see the module docstring."""

    def __init__(self, threads: int):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, threads), daemon=True)
        self._proc.start()
        child.close()
        try:
            self.info = self._call("hello")  # torch's version and threads, or its ImportError
        except RuntimeError:
            self.close()
            raise

    def _call(self, *request):
        self._conn.send(request)
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"the PyTorch worker failed:\n{value}")
        return value

    def build(self, cfg, spec, host_batches) -> dict[str, int]:
        """Eager and compiled steps of this config on these batches; their parameter counts."""
        return self._call("build", cfg, spec, list(host_batches))

    def runner(self, name: str):
        """`run(k)`: k steps of variant `name` in the worker; seconds per step."""
        return lambda k: self._call("run", name, k)

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close",))
            except OSError:
                pass
            self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
