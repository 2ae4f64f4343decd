"""Command line: train, checkpoint, resume and evaluate under missing modalities.

  python -m robult_jax.main --config configs/watch.py --workdir runs/watch \
      [--config.sampling.label_rate=0.1 ...]

Thin on purpose: everything else lives in importable modules.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from robult_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and results (resumed if it exists)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Orbax and tfds log every save and read at INFO; the progress bar and
    # metrics.jsonl already say what happens. `--verbosity=0` brings them back.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    train.enable_compilation_cache()
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, ImportError, train.NonFiniteLossError) as e:
        # Expected user errors: one clear message, no traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(_WORKDIR.value, "results.md")) as f:
        print(f.read())
    print(f"Results, metrics and checkpoints are in {_WORKDIR.value}/")


if __name__ == "__main__":
    app.run(main)
