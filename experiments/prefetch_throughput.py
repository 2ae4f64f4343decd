"""Steps/s of the training loop fed by TrainBatches vs batches already on the devices.

  .venv/bin/python experiments/prefetch_throughput.py [--config watch] \
      [--batch-sizes 128,256,...,8192] [--prefetch 2] [--seconds 6]

For each global batch size B (labeled B/4, unlabeled 3B/4, as the default
config's 32 + 96), compiles the config's train step once, then times the same
steps fed two ways: (a) 4 batches put on the devices beforehand and cycled
(the input pipeline costs nothing), (b) `pipeline.TrainBatches` sampling and
placing each step's batch, `--prefetch` deep. Both dispatch asynchronously and
wait only at the end, as train.py does between log steps. Prints one line per
B and a JSON list. A figure, not a test.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from robult_jax import config as config_lib  # noqa: E402
from robult_jax import configs, models, objective, parallel, tasks, train  # noqa: E402
from robult_jax.data import load_dataset, pipeline, sampler  # noqa: E402


def _time(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def measure(cfg, dataset, batch: int, prefetch: int, seconds: float) -> dict:
    spec, task = dataset.spec, tasks.get(dataset.spec.task)
    labeled = np.arange(0, len(dataset.train), 4)
    s = sampler.SemiSupervisedSampler(
        dataset.train, labeled, labeled_batch=batch // 4, unlabeled_batch=batch - batch // 4,
        modality_dropout=cfg.sampling.dropout(), seed=0,
    )  # fmt: skip
    mesh = parallel.make_mesh()
    model = models.build_model(cfg.model, spec)
    tx = objective.make_optimizer(cfg.optim, cfg.train.num_steps)
    step_fn = jax.jit(
        objective.make_train_step(
            model, tx, cfg.loss, task, objective.make_schedule(cfg.optim, cfg.train.num_steps)
        ),
        donate_argnums=(0,),
    )
    key = jax.random.key(0)
    state = parallel.replicate(
        train.init_state(cfg, model, tx, spec, key, s.batch(0, rows=slice(0, 1))), mesh
    )
    preloaded = [pipeline.device_batch(s, i, mesh) for i in range(4)]
    state, m = step_fn(state, preloaded[0], key)  # compile
    jax.block_until_ready(m)
    start = time.perf_counter()
    state, m = step_fn(state, preloaded[1], key)
    jax.block_until_ready(m)
    steps = max(3, int(seconds / max(time.perf_counter() - start, 1e-4)))

    def run_preloaded(n):
        nonlocal state
        for i in range(n):
            state, metrics = step_fn(state, preloaded[i % 4], key)
        jax.block_until_ready(metrics)

    def run_pipeline(n):
        nonlocal state
        with pipeline.TrainBatches(
            s, mesh, start_step=10, stop_step=10 + n, prefetch=prefetch
        ) as b:
            for _, device_batch in b:
                state, metrics = step_fn(state, device_batch, key)
        jax.block_until_ready(metrics)

    # Alternate, twice each, and keep each one's best: other load on the machine hits both.
    pre = max(_time(run_preloaded, steps) for _ in range(2))
    pipe = max(_time(run_pipeline, steps) for _ in range(2))
    return {"batch": batch, "steps": steps, "preloaded_steps_per_s": pre,
            "pipeline_steps_per_s": pipe, "ratio": pipe / pre}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="watch")
    parser.add_argument("--batch-sizes", default="128,256,512,1024,2048,4096,8192")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of one timed run")
    args = parser.parse_args()
    raw = configs.load(args.config)
    cfg = config_lib.from_config_dict(raw)
    dataset = load_dataset(cfg.data)
    rows = []
    for batch in map(int, args.batch_sizes.split(",")):
        row = measure(cfg, dataset, batch, args.prefetch, args.seconds)
        rows.append(row)
        print(f"B={batch:5d}  preloaded {row['preloaded_steps_per_s']:8.2f}/s  "
              f"TrainBatches {row['pipeline_steps_per_s']:8.2f}/s  "
              f"ratio {row['ratio']:.3f}", flush=True)  # fmt: skip
    print(json.dumps({"devices": jax.device_count(), "prefetch": args.prefetch, "rows": rows}))


if __name__ == "__main__":
    main()
