"""Robult on `watch` (smartwatch accelerometer + gyroscope), 5% labels.

The default configuration of the project; every other config imports it and
overrides a few fields. `get_config("fused")` (on the command line
`--config configs/watch.py:fused`) gives this project's first reconstruction,
the "fused" architecture, instead of the paper's (docs/method.md section 2).

Run:
  python -m robult_jax.main --config configs/watch.py --workdir runs/watch
Override any field, e.g. `--config.sampling.label_rate=0.1 --config.seed=1`.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(architecture: str = "paper") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "robult"  # a name for reports; the loss weights below decide the terms
    config.seed = 0  # model init, data order and modality dropout all derive from it

    config.data = ml_collections.ConfigDict()
    config.data.name = "watch"  # see robult_jax.data.registry for the registered names
    config.data.on_nonfinite = "mask"  # NaN/Inf in a modality: missing there (counted) | "error"
    config.data.streaming = False  # True: inputs read from disk on demand, not held in memory
    config.data.data_dir = ""  # tfds data dir; "" = $ROBULT_JAX_DATA_DIR or ~/.cache/robult_jax
    config.data.val_subject = 7  # training subject held out for validation / model selection

    # How training batches are drawn; kept apart from `data` so that dataset configs
    # that replace `config.data` keep these fields.
    config.sampling = ml_collections.ConfigDict()
    config.sampling.label_rate = 0.05  # fraction of training rows whose label is used, (0, 1]
    config.sampling.label_seed = 0  # seed of the stratified labeled/unlabeled split
    config.sampling.labeled_batch = 32  # labeled rows per step (global, all devices)
    config.sampling.unlabeled_batch = 96  # unlabeled rows per step (global, all devices)
    # Train-time P(drop) per modality, never all; in [0, 1). Set per architecture below.
    config.sampling.modality_dropout = 0.0
    # Per-modality train-time rates (dataset's modality order), e.g. (0.5, 0.0) to
    # drop acc more often than gyro; () = modality_dropout for every modality.
    config.sampling.modality_dropout_rates = ()

    config.model = ml_collections.ConfigDict()
    config.model.architecture = architecture  # "paper" (the figure) | "fused" (ours)
    config.model.latent_dim = 64  # D: width of h_i and h_0 (paper: also of u_i, z_i, s)
    config.model.hidden_dim = 128  # width of the MLPs
    config.model.num_heads = 4  # attention heads (fused attention f_0, transformer encoders)
    config.model.dropout_rate = 0.1
    config.model.cnn1d_features = (32, 64, 64)  # channels of the cnn1d encoder's conv layers
    config.model.cnn2d_features = (16, 32, 64)  # channels of the cnn2d encoder's conv layers
    config.model.seq_layers = 1  # attention blocks / stacked GRUs of sequence encoders
    config.model.seq_width = 0  # width inside sequence encoders; 0 = latent_dim
    # Encoder per modality; a modality not named here gets the default of its kind
    # (vector: mlp, timeseries: cnn1d, image: cnn2d).
    config.model.encoders = ml_collections.ConfigDict({"acc": "cnn1d", "gyro": "cnn1d"})
    # "bfloat16": activations and matmuls in bfloat16; parameters, optimizer state and
    # every loss reduction stay float32 (README "Running on many devices").
    config.model.compute_dtype = "float32"

    config.loss = ml_collections.ConfigDict()
    config.loss.w_sup = 1.0  # supervised task loss on labeled rows
    config.loss.w_lb = 1.0  # PU contrastive loss, labeled anchors
    config.loss.w_ulb = 1.0  # PU contrastive loss, unlabeled anchors
    config.loss.w_rec = 1.0  # latent reconstruction loss
    config.loss.pu_mode = "soft"  # "soft" (RBF proximity) | "hard" (pseudo-labels) | "none"
    config.loss.temperature = 0.1  # tau of the contrastive softmax
    config.loss.sigma = 0.5  # RBF bandwidth on the unit sphere (squared distances in [0, 4])
    config.loss.label_sigma = 0.5  # regression only: label-kernel width of the PU weights
    config.loss.threshold = 0.0  # confidence below which an unlabeled pair is not positive
    config.loss.rec_stop_gradient = True  # reconstruct sg(h_i) rather than a moving target
    config.loss.centroid_decay = 0.9  # EMA of per-class labeled embeddings (RBF fallback)
    set_architecture(config, architecture)

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 2e-3  # peak of the warm-up + cosine schedule
    config.optim.warmup_steps = 50
    config.optim.weight_decay = 1e-4  # AdamW, decoupled
    config.optim.grad_clip_norm = 1.0  # global-norm clipping

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 600
    config.train.log_every = 50  # device values are fetched only on these steps
    config.train.eval_every = 100  # validation + best-checkpoint bookkeeping
    config.train.checkpoint_every = 200  # periodic checkpoint for resuming
    config.train.keep_checkpoints = 2  # periodic checkpoints kept (the best is kept apart)
    config.train.progress_bar = True
    config.train.tensorboard = True  # also <workdir>/tensorboard/ event files (tensorboardX)
    config.train.prefetch = 2  # batches sampled and put on the devices ahead, in a thread
    # > 0: a jax.profiler trace of that many steps in <workdir>/profile/ (TensorBoard's
    # profile plugin, or ui.perfetto.dev), starting once profile_start steps are done.
    config.train.profile_steps = 0
    config.train.profile_start = 10  # steps before the trace: compilation and warm-up stay out

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "test"  # final evaluation split; "validation" while tuning
    config.eval.batch_size = 512  # fixed (padded) so evaluation compiles once
    config.eval.missing_rates = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    config.eval.mask_seeds = (0, 1, 2)
    # Extra test-time patterns, one rate per modality each, e.g. ((0.0, 0.5), (0.5, 0.0));
    # reported as `per_modality_missing` in results.json/md.
    config.eval.per_modality_rates = ()  # random-missingness masks averaged over these seeds

    # How one step is spread over the devices (README "Running on many devices").
    config.parallel = ml_collections.ConfigDict()
    config.parallel.form = "jit"  # "jit": the compiler partitions | "shard_map": per device
    config.parallel.shard_params = False  # FSDP-style: split large parameters over "data"
    config.parallel.shard_min_size = 2**16  # parameters smaller than this stay replicated
    return config


def set_architecture(config: ml_collections.ConfigDict, architecture: str) -> None:
    """The fields only `architecture` reads; the other architecture's fields are None.

    robult_jax.config.ARCHITECTURE_FIELDS lists them; setting a None field of the
    other architecture is an error, so that no option is silently ignored.
    """
    paper = architecture == "paper"
    config.model.architecture = architecture
    config.method = {"paper": "robult", "fused": "robult_fused"}.get(architecture, architecture)
    # paper: f_0's per-modality stems, "own" (own weights) | "shared" (the f_i trunks)
    config.model.fusion_stems = "own" if paper else placeholder(str)
    # paper, some modality missing: "mean_probs" (mean of c(u_i + z_i)'s probabilities)
    # | "mean_latent" (c of the mean of u_i + z_i)
    config.model.combine = "mean_probs" if paper else placeholder(str)
    config.model.fusion = placeholder(str) if paper else "attention"  # fused f_0: | "mean"
    config.model.unique_dim = placeholder(int) if paper else 32  # fused: K, width of u_i
    config.model.proj_dim = placeholder(int) if paper else 64  # fused: P, width of s and z_i
    config.loss.w_uni = 1.0 if paper else placeholder(float)  # paper: unimodal terms of L_sup
    config.loss.rec_target = "h_i" if paper else placeholder(str)  # paper: | "h_0"
    # The paper trains on complete samples; "fused" must see missing subsets to learn them.
    config.sampling.modality_dropout = 0.0 if paper else 0.3
