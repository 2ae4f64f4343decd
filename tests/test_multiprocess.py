"""Two processes x two CPU devices train and evaluate exactly like one process x four.

This is the multi-host code path (jax.distributed, each process feeding its
rows of the global batch, cross-process checkpoints and evaluation), run on
one machine over the gloo CPU collectives.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from test_train import _config

from robult_jax import train

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    worker = os.path.join(HERE, "multiprocess_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), port, str(tmp_path / "multi")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    multi = [json.loads(o.split("RESULT ", 1)[1]) for o, _ in outs]
    assert multi[0] == multi[1] and multi[0]["devices"] == 4

    single = train.train_and_evaluate(_config(), str(tmp_path / "single"))
    for subset, metrics in single["subsets"].items():
        for name, value in metrics.items():
            np.testing.assert_allclose(
                multi[0]["subsets"][subset][name], value, atol=1e-6, err_msg=f"{subset}/{name}"
            )
    assert (tmp_path / "multi" / "results.json").exists()
