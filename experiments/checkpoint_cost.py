"""What checkpointing costs the default run, and how long a resume's restore takes.

  .venv/bin/python experiments/checkpoint_cost.py [--config configs/watch.py] [--workdir DIR]

Trains the config once into a fresh workdir, timing every call of
`Checkpointer.save` / `save_best` on the training thread (asynchronous saves:
the background writes are not in it, but they share the CPU and show in the
run's wall time), then restores the latest checkpoint the way a resume does,
in a new `Checkpointer`. Prints one JSON line. A figure, not a test.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robult_jax import checkpointing, configs, train  # noqa: E402


def _timed(log: list[float], fn):
    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        log.append(time.perf_counter() - start)
        return out

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/watch.py")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    config = configs.load(args.config)
    config.train.progress_bar = False
    workdir = args.workdir or tempfile.mkdtemp(prefix="checkpoint_cost_")
    shutil.rmtree(workdir, ignore_errors=True)

    saves, bests, restores, loop = [], [], [], []
    ckpt = checkpointing.Checkpointer
    ckpt.save = _timed(saves, ckpt.save)
    ckpt.save_best = _timed(bests, ckpt.save_best)
    ckpt.restore_latest = _timed(restores, ckpt.restore_latest)
    train.enable_compilation_cache()
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir, pause_at_step=config.train.num_steps - 1)
    loop.append(time.perf_counter() - start)
    restores.clear()
    # A resume: a fresh Checkpointer restores the latest checkpoint, trains the last step.
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steps_per_sec = [r["train/steps_per_sec"] for r in rows if "train/steps_per_sec" in r]
    train_s = config.train.num_steps / (sum(steps_per_sec) / len(steps_per_sec))
    blocking = sum(saves) + sum(bests)
    print(json.dumps({
        "config": args.config,
        "num_steps": config.train.num_steps,
        "periodic_saves": len(saves),
        "best_saves_offered": len(bests),
        "save_blocking_s": round(blocking, 3),
        # steps/s is measured between log steps, evaluations and saves included
        "training_loop_s": round(train_s, 2),
        "checkpoint_share_of_training_loop": round(blocking / train_s, 4),
        "restore_latest_s": round(restores[0], 3),
        "first_attempt_wall_s": round(loop[0], 1),
    }))  # fmt: skip
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
