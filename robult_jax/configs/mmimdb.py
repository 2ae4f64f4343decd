"""Robult on MM-IMDb (plot word2vec + poster VGG features, 23 genres, multi-label), 10% labels.

Needs multimodal_imdb.hdf5, downloaded by hand (see
robult_jax/data/benchmarks/mmimdb.py for where to get it).

Run:
  python -m robult_jax.main --config configs/mmimdb.py --workdir runs/mmimdb \
    --config.data.manual_dir=/path/to/folder/containing/multimodal_imdb.hdf5
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "mmimdb"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True: inputs read from disk on demand, not held in memory
    config.data.data_dir = ""  # tfds cache dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.data.manual_dir = ""  # required: folder holding multimodal_imdb.hdf5
    # Contiguous row ranges train [0, train_end), validation [train_end, val_end),
    # test [val_end, N): the published split. 0 = read the file's `split` attribute.
    config.data.train_end = 15552
    config.data.val_end = 18160
    config.sampling.label_rate = 0.1  # fraction of training rows whose genres are used
    config.sampling.label_seed = 0  # seed of the labeled/unlabeled split
    config.sampling.labeled_batch = 64  # global; a multiple of 8 so it shards over devices
    config.sampling.unlabeled_batch = 192  # global; a multiple of 8

    # text (300,) and image (4096,) are feature vectors.
    config.model.encoders = ml_collections.ConfigDict({"text": "mlp", "image": "mlp"})
    config.model.hidden_dim = 256

    config.train.num_steps = 3000
    config.train.eval_every = 250
    config.train.checkpoint_every = 1000
    config.optim.warmup_steps = 100
    return config
