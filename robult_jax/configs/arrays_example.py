"""Robult on your own arrays: a .npz file (or a directory of .npy files).

data.path must be set; the file holds one array per modality named in
data.modalities, plus "labels" and optionally "mask" and "split" (see
robult_jax/data/arrays.py and docs/own_data.md). Run:
  python -m robult_jax.main --config configs/arrays_example.py \
      --config.data.path=my_data.npz --workdir runs/my_data
then predict on new data (any modality may be missing per sample, mask or NaN):
  python -m robult_jax.predict --workdir runs/my_data --input new.npz --output preds.npz

The modality names below match docs/own_data.md. For other names, copy this
file and edit data.modalities and model.encoders (configs are locked, so new
names cannot be added from the command line).
"""

import ml_collections

from robult_jax.configs import watch


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = watch.get_config(architecture)
    config.data = ml_collections.ConfigDict()
    config.data.name = "arrays"
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True is refused: the arrays are read into memory
    config.data.path = ""  # required: my_data.npz or a directory holding <key>.npy files
    # Array name -> kind: "vector" (F,), "timeseries" (T, F), "image" (H, W[, C]),
    # "sequence" (T, F + 1, last channel = validity). Shapes are read from the arrays.
    config.data.modalities = ml_collections.ConfigDict({"acc": "timeseries", "gyro": "timeseries"})
    config.data.label_key = "labels"  # (N,) ints or strings; (N, C) 0/1 for multilabel
    config.data.mask_key = "mask"  # optional (N, M) bool, columns = modality names sorted
    config.data.split_key = "split"  # optional (N,) "train"/"validation"/"test" or 0/1/2
    config.data.val_fraction = 0.2  # of all rows, used only when the file has no split
    config.data.test_fraction = 0.2
    config.data.split_seed = 0  # seed of that random (class-stratified) split
    config.data.task = "multiclass"  # "multiclass" | "multilabel" | "regression"
    config.data.num_classes = 0  # 0 = inferred from the labels
    config.data.class_names = ()  # optional; default: the label strings or "0".."C-1"
    config.data.normalize = True  # per-feature standardisation fitted on present train entries
    config.sampling.label_rate = 0.1  # fraction of training rows whose label is used, in (0, 1]
    config.sampling.label_seed = 0  # seed of the stratified labeled/unlabeled split
    config.sampling.labeled_batch = 32  # labeled rows per step (global, multiple of devices)
    config.sampling.unlabeled_batch = 96  # unlabeled rows per step (global, multiple of devices)

    # Encoder per modality (names in robult_jax/encoders.py: "mlp", "cnn1d", "cnn2d", ...);
    # a modality not named here gets the default of its kind (vector: mlp,
    # timeseries: cnn1d, image: cnn2d).
    config.model.encoders = ml_collections.ConfigDict({"acc": "cnn1d", "gyro": "cnn1d"})
    return config
