"""Steps/s of the default watch train step for each step form, on 1 and 2 devices.

  .venv/bin/python experiments/step_forms.py [--devices 1,2] [--steps 30]

Each (devices, form, shard_params) runs in its own process, with that many
fake CPU devices on a CPU-only machine (`jax_num_cpu_devices`; on GPU/TPU the
first N real devices). Global batch 32 + 96 whatever the device count, so the
figures compare the cost of one global batch: the issue's bound is that 2
devices are not slower than 1 by more than 10%. Prints one JSON row each and a
table; the median of 3 timed runs of `--steps` steps after the compiling step.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = """
import dataclasses, json, sys, time
sys.path.insert(0, {root!r})
import jax
if jax.config.jax_platforms in (None, "", "cpu"):
    jax.config.update("jax_num_cpu_devices", {devices})
from robult_jax import config as config_lib, models, objective, parallel, tasks, train
from robult_jax.configs import watch
from robult_jax.data import load_dataset, sampler

cfg = config_lib.from_config_dict(watch.get_config())
pc = dataclasses.replace(cfg.parallel, form={form!r}, shard_params={shard})
ds = load_dataset(cfg.data)
model = models.build_model(cfg.model, ds.spec)
tx = objective.make_optimizer(cfg.optim, cfg.train.num_steps)
idx = sampler.label_split(ds.train.labels, cfg.sampling.label_rate, cfg.sampling.label_seed)
batches = train.make_sampler(cfg, ds.train, idx)
mesh = parallel.make_mesh(jax.devices()[:{devices}])
state = train.init_state(cfg, model, tx, ds.spec, jax.random.key(0), batches.batch(0))
state = parallel.place_state(state, mesh, pc)
step = parallel.jit_train_step(objective.make_train_step(
    model, tx, cfg.loss, tasks.get(ds.spec.task), objective.make_schedule(cfg.optim, 600),
    parallel_config=pc, mesh=mesh), state, mesh)
placed = [parallel.shard_batch(batches.batch(i), mesh) for i in range(8)]
key = jax.random.key(1)
t = time.perf_counter(); state, m = step(state, placed[0], key); jax.block_until_ready(m)
first = time.perf_counter() - t
rates = []
for _ in range(3):
    t = time.perf_counter()
    for i in range({steps}):
        state, m = step(state, placed[i % 8], key)
    jax.block_until_ready(m)
    rates.append({steps} / (time.perf_counter() - t))
print("ROW", json.dumps(dict(devices={devices}, form={form!r}, shard_params={shard},
      first_step_s=round(first, 1), steps_per_s=round(sorted(rates)[1], 2))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    rows = []
    for devices in map(int, args.devices.split(",")):
        variants = [("jit", False), ("shard_map", False)]
        variants += [("jit", True), ("shard_map", True)] if devices > 1 else []
        for form, shard in variants:
            code = WORKER.format(root=ROOT, devices=devices, form=form, shard=shard,
                                 steps=args.steps)  # fmt: skip
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            rows.append(json.loads(out.stdout.split("ROW ", 1)[1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\ndevices | form | shard_params | steps/s | first step s")
    for r in rows:
        print(f"{r['devices']} | {r['form']} | {r['shard_params']} | {r['steps_per_s']} | "
              f"{r['first_step_s']}")  # fmt: skip


if __name__ == "__main__":
    main()
