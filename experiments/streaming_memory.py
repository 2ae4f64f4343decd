"""Host peak RSS of a training run, streamed vs in memory, at 1x and 10x a dataset's size.

  .venv/bin/python experiments/streaming_memory.py [--rows 30000] [--factors 1,10] \
      [--workdir DIR] [--steps 20]

Builds a synthetic array_record tfds dataset per factor (train: rows x factor
windows of two (100, 3) float32 modalities, like `watch`; validation and test
1000 each), then trains a small model on it for `--steps` steps and evaluates,
each run in a fresh process (`data.name = "tfds"`, `data.streaming` True or
False), and reports that process's peak resident set size (ru_maxrss). The
first build takes a while (tfds writes ~5k examples/s here) and is reused.
A figure, not a test.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BUILDER = '''
import numpy as np
import tensorflow_datasets as tfds
from robult_jax.data import tfds_io


class SyntheticWindows(tfds_io.ArrayRecordBuilder, skip_registration=True):
    """Synthetic watch-like windows (streaming benchmark)."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, rows, **kw):
        self.rows = rows
        super().__init__(**kw)

    def _features(self):
        return {
            "acc": tfds.features.Tensor(shape=(100, 3), dtype=np.float32),
            "gyro": tfds.features.Tensor(shape=(100, 3), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=7),
        }

    def _split_generators(self, dl_manager):
        n = {"train": self.rows, "validation": 1000, "test": 1000}
        return {s: self._generate_examples(s, k) for s, k in n.items()}

    def _generate_examples(self, split, n):
        rng = np.random.default_rng(len(split))
        for i in range(n):
            label = i % 7
            yield i, {
                "acc": (rng.normal(size=(100, 3)) + label).astype(np.float32),
                "gyro": (rng.normal(size=(100, 3)) - label).astype(np.float32),
                "label": label,
            }
'''

RUN = """
import json, resource, sys
sys.path.insert(0, {root!r})
import ml_collections
from robult_jax import train
from robult_jax.configs import synthetic

config = synthetic.get_config()
config.data = ml_collections.ConfigDict(
    dict(name="tfds", tfds_dir={tfds_dir!r}, streaming={streaming}, on_nonfinite="mask")
)
config.model.encoders = ml_collections.ConfigDict(dict(acc="cnn1d", gyro="cnn1d"))
config.sampling.labeled_batch, config.sampling.unlabeled_batch = 32, 96
config.train.num_steps, config.train.eval_every = {steps}, {steps}
config.train.checkpoint_every, config.train.log_every = {steps}, {steps}
config.eval.batch_size = 256
config.eval.missing_rates = (0.5,)
config.eval.mask_seeds = (0,)
train.train_and_evaluate(config, {workdir!r})
print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def build(data_dir: str, rows: int) -> str:
    sys.path.insert(0, data_dir)
    with open(os.path.join(data_dir, "synthetic_windows_builder.py"), "w") as f:
        f.write(BUILDER)
    from synthetic_windows_builder import SyntheticWindows

    from robult_jax.data import tfds_io

    builder = SyntheticWindows(rows=rows, data_dir=os.path.join(data_dir, f"rows_{rows}"))
    if not builder.is_prepared():
        tfds_io.prepare(builder, dataset=f"synthetic windows x{rows}")
    return str(builder.data_path)


def run(tfds_dir: str, workdir: str, streaming: bool, steps: int) -> float:
    code = RUN.format(root=ROOT, tfds_dir=tfds_dir, streaming=streaming, steps=steps,
                      workdir=workdir)  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return float(out.stdout.split("PEAK_RSS_MB", 1)[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30000, help="training rows at 1x")
    parser.add_argument("--factors", default="1,10")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "stream_mem"))
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for factor in map(int, args.factors.split(",")):
        n = args.rows * factor
        tfds_dir = build(args.workdir, n)
        size_mb = n * 2 * 100 * 3 * 4 / 2**20
        for streaming in (False, True):
            name = f"x{factor}_{'stream' if streaming else 'memory'}"
            peak = run(tfds_dir, os.path.join(args.workdir, "runs", name), streaming, args.steps)
            row = dict(factor=factor, train_rows=n, train_inputs_mb=round(size_mb, 1),
                       streaming=streaming, peak_rss_mb=round(peak, 1))  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
