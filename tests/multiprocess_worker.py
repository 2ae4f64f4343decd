"""One process of a 2-process x 2-CPU-device run (started by test_multiprocess.py).

Usage: python multiprocess_worker.py <process_id> <port> <workdir>
Prints `RESULT <json>` with the test metrics per modality subset.
"""

import json
import os
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Before any other JAX call: the device count and the CPU collectives are fixed at start-up.
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main() -> None:
    pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid
    )
    from test_train import _config  # the trainer tests' config: same programs, same run

    from robult_jax import train

    results = train.train_and_evaluate(_config(), workdir)
    print("RESULT " + json.dumps({"devices": jax.device_count(), "subsets": results["subsets"]}))


if __name__ == "__main__":
    main()
