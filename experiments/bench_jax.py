"""The JAX side of experiments/benchmark.py: one config's train step, compiled and timed.

`JaxBench(config)` builds what `robult_jax.train` builds (dataset, sampler,
model, AdamW, the jitted `objective.make_train_step`), with its batches drawn
from the real sampler and placed on the devices up front, so that a timed
call runs the step alone. Compile time is split into trace, lower and
compile (`jax.jit(f).trace(...).lower().compile()`); FLOPs and memory come
from XLA's own analysis of the compiled step.

Also here: the machine's float32 matmul peak under jit (the yardstick for the
step's achieved FLOP/s), the contrastive term alone (B x B x M, the part that
grows quadratically with the batch) and the input-pipeline comparison.

Shape legend: B batch, M modalities, P embedding width, C classes, N matmul size.
"""

import importlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from robult_jax import config as config_lib
from robult_jax import (
    configs,
    contrastive,
    evaluate,
    losses,
    masks,
    models,
    objective,
    parallel,
    tasks,
    train,
)
from robult_jax.data import load_dataset, sampler

NUM_BATCHES = 2  # distinct pre-placed batches the timed steps cycle through


# The shipped datasets whose inputs synthetic data stands in for under
# `load_config(..., synthetic_inputs=True)`: each modality's name and shape
# (encoders are chosen by name), the classes and the split sizes.
# tests/test_benchmark.py checks them against the real datasets.
STAND_INS = {
    "watch": dict(
        modality_shapes={"acc": (100, 3), "gyro": (100, 3)},
        num_classes=7, num_train=2669, num_val=524, num_test=1484,
    ),
    "mfeat": dict(
        modality_shapes={"fou": (76,), "fac": (216,), "kar": (64,), "pix": (240,), "zer": (47,),
                         "mor": (6,)},
        num_classes=10, num_train=1200, num_val=400, num_test=400,
    ),
}  # fmt: skip


def _synthetic_data(modality_shapes: dict, **fields) -> ml_collections.ConfigDict:
    """The synthetic dataset's data config with these modalities and `fields` set."""
    data = configs.load("synthetic").data
    data.modality_shapes = ml_collections.ConfigDict(modality_shapes)
    for key, value in fields.items():
        data[key] = value
    return data


def load_config(
    name: str,
    *,
    batch_size: int,
    dtype: str,
    modalities: int | None = None,
    series_shape: tuple[int, int] = (100, 3),
    synthetic_inputs: bool = False,
) -> ml_collections.ConfigDict:
    """The packaged config `name` ("watch", "watch:fused", ...) at global batch `batch_size`.

    Labeled:unlabeled is 1:3, as the default config's 32:96. With `modalities`,
    the data is replaced by the synthetic dataset with that many identical time
    series modalities of `series_shape` (default watch's), each with a cnn1d
    encoder; the model widths stay those of `name`. With `synthetic_inputs`,
    the data is replaced by synthetic data of the same modalities, classes
    and split sizes (`STAND_INS`): the same model and step, timed without the
    dataset's packages (tensorflow-datasets, the packages that ship the
    data), say on a GPU machine that has only JAX.
    """
    config = configs.load(name)
    if modalities is not None:
        series = {f"m{i}": series_shape for i in range(modalities)}
        config.data = _synthetic_data(series, num_train=512)
        config.model.encoders = ml_collections.ConfigDict({k: "cnn1d" for k in series})
        config.sampling.label_rate = 0.25
    elif synthetic_inputs and config.data.name != "synthetic":
        if config.data.name not in STAND_INS:
            raise ValueError(f"no synthetic stand-in for dataset {config.data.name!r}")
        config.data = _synthetic_data(**STAND_INS[config.data.name])
    config.sampling.labeled_batch = batch_size // 4
    config.sampling.unlabeled_batch = batch_size - batch_size // 4
    if dtype != "float32":
        if "compute_dtype" not in config.model:
            raise SystemExit(f"--dtype {dtype}: this robult_jax has no model.compute_dtype.")
        config.model.compute_dtype = dtype
    return config


# Loaded datasets by data config (watch takes ~3 s to load): every batch size shares one.
_DATASETS: dict = {}


def _dataset(data_config: ml_collections.ConfigDict):
    key = data_config.to_json()
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(data_config)
    return _DATASETS[key]


# Initial training states on the host, by model: parameter shapes do not depend on the
# batch size, so every batch size starts from one state (its init compiles for ~5 s).
_INIT_STATES: dict = {}


def _init_state(config, cfg, model, tx, spec, key, batch):
    cache_key = (config.model.to_json(), config.optim.to_json(), config.seed, spec)
    if cache_key not in _INIT_STATES:
        state = train.init_state(cfg, model, tx, spec, key, batch)
        _INIT_STATES[cache_key] = jax.device_get(state)
    return _INIT_STATES[cache_key]


def _cost(stage) -> dict:
    """XLA's cost analysis of a Lowered or Compiled (a dict; older JAX: a list of one)."""
    cost = stage.cost_analysis()
    return cost[0] if isinstance(cost, list | tuple) else cost


def executed_flops(compiled, lowered, lower_whole: Callable[[], jax.stages.Lowered]) -> dict:
    """FLOPs one call of `compiled` (lowered as `lowered`) runs, loops' iterations included.

    XLA's cost analysis counts the body of a loop once, not once per
    iteration. The train step's loops are the contrastive term's blocks of
    anchor rows and rho's blocks of the RBF kernel (`contrastive.row_block`:
    on CPU from B = 1024 up), so XLA's count misses (blocks - 1) blocks of
    them: at B = 8192 a third of the step (README "Performance").
    `lower_whole()` lowers the same computation under
    `contrastive.whole_batch()`: one block, no loop. The two unoptimised
    programs compute the same thing and differ only in the loops, so the
    difference of their counts is what the further iterations compute; it
    is added to the compiled program's count. (Not the compiled whole-batch
    program's count: with one block XLA merges the backward pass's
    recomputed logits with the forward's, which the blocked program computes
    twice.) Returns flops, flops_xla (XLA's count of `compiled`) and
    flops_in_loops (the difference).
    """
    xla = float(_cost(compiled).get("flops", 0.0))
    with contrastive.whole_batch():
        whole = lower_whole()
    extra = float(_cost(whole).get("flops", 0.0)) - float(_cost(lowered).get("flops", 0.0))
    return {"flops": xla + extra, "flops_xla": xla, "flops_in_loops": extra}


def median(xs) -> float:
    return float(np.median(np.asarray(xs, np.float64)))


class JaxBench:
    """One config's train step: built, compiled (timed in three phases) and callable.

    `run(k)` runs k steps on the pre-placed batches and returns the seconds
    per step (block_until_ready at the end, so dispatch overlaps as in
    training but nothing is left running when the clock stops).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        cfg = config_lib.from_config_dict(config)
        train.check_batch_sizes(cfg)
        self.cfg = cfg
        self.dataset = _dataset(config.data)
        config_lib.check_against_dataset(cfg, self.dataset.spec)
        self.spec = self.dataset.spec
        self.task = tasks.get(self.spec.task)
        self.mesh = parallel.make_mesh()
        labels = self.dataset.train.labels
        labeled_idx = sampler.label_split(labels, cfg.sampling.label_rate, cfg.sampling.label_seed)
        self.sampler = train.make_sampler(cfg, self.dataset.train, labeled_idx)
        self.model = models.build_model(cfg.model, self.spec)
        self.tx = objective.make_optimizer(cfg.optim, cfg.train.num_steps)
        schedule = objective.make_schedule(cfg.optim, cfg.train.num_steps)
        self.step_fn = objective.make_train_step(self.model, self.tx, cfg.loss, self.task, schedule)
        init_key, self.key = jax.random.split(jax.random.key(cfg.seed))
        self.host_batches = [self.sampler.batch(i) for i in range(NUM_BATCHES)]
        self.batches = [parallel.shard_batch(b, self.mesh) for b in self.host_batches]
        state = _init_state(
            config, cfg, self.model, self.tx, self.spec, init_key, self.host_batches[0]
        )
        self.state = parallel.replicate(state, self.mesh)
        self.num_params = int(sum(np.size(x) for x in jax.tree.leaves(state.params)))
        self.compiled = None
        self._calls = 0

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def compile(self) -> dict[str, float]:
        """Traces, lowers and compiles the step as train.py jits it; seconds of each phase."""
        jitted = jax.jit(self.step_fn, donate_argnums=(0,))
        t0 = time.perf_counter()
        traced = jitted.trace(self.state, self.batches[0], self.key)
        t1 = time.perf_counter()
        self.lowered = traced.lower()
        t2 = time.perf_counter()
        self.compiled = self.lowered.compile()
        t3 = time.perf_counter()
        return {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2}

    def analysis(self) -> dict:
        """FLOPs of one step (`executed_flops`) and the compiled program's memory footprint."""
        args = (self.state, self.batches[0], self.key)
        # A new function object: jax.jit(self.step_fn) could reuse compile()'s trace.
        lower_whole = lambda: jax.jit(lambda *a: self.step_fn(*a)).trace(*args).lower()
        out = executed_flops(self.compiled, self.lowered, lower_whole)
        out["bytes_accessed"] = float(_cost(self.compiled).get("bytes accessed", 0.0))
        mem = self.compiled.memory_analysis()
        if mem is not None:
            out["xla_argument_bytes"] = int(mem.argument_size_in_bytes)
            out["xla_temp_bytes"] = int(mem.temp_size_in_bytes)
            out["xla_output_bytes"] = int(mem.output_size_in_bytes)
        return out

    def run(self, k: int) -> float:
        """k steps on the pre-placed batches; seconds per step."""
        start = time.perf_counter()
        for _ in range(k):
            batch = self.batches[self._calls % NUM_BATCHES]
            self.state, metrics = self.compiled(self.state, batch, self.key)
            self._calls += 1
        jax.block_until_ready((self.state, metrics))
        return (time.perf_counter() - start) / k

    def run_sampled(self, k: int) -> float:
        """k steps fed in the training thread (sample, then shard_batch, every step): prefetch 0."""
        start = time.perf_counter()
        for step in range(k):
            batch = parallel.shard_batch(self.sampler.batch(NUM_BATCHES + step), self.mesh)
            self.state, metrics = self.compiled(self.state, batch, self.key)
        jax.block_until_ready((self.state, metrics))
        return (time.perf_counter() - start) / k

    def run_pipeline(self, k: int, prefetch: int) -> float | str:
        """k steps fed by `robult_jax.data.pipeline.TrainBatches`; or why not."""
        try:
            pipeline = importlib.import_module("robult_jax.data.pipeline")
        except ImportError:
            return "skipped: robult_jax.data.pipeline not available"
        batches = pipeline.TrainBatches(
            self.sampler, self.mesh, start_step=NUM_BATCHES, stop_step=NUM_BATCHES + k,
            prefetch=prefetch,
        )  # fmt: skip
        try:
            start = time.perf_counter()
            for _, batch in batches:
                self.state, metrics = self.compiled(self.state, batch, self.key)
            jax.block_until_ready((self.state, metrics))
            return (time.perf_counter() - start) / k
        finally:
            batches.close()

    def eval_throughput(self, repeats: int) -> dict:
        """Samples/s of `evaluate_subsets` on the test split (every subset of modalities).

        The first call compiles `make_predict_many_fn` and is not timed; each
        timed call predicts every test row under every subset (the encoders
        once per row) and computes the metrics, as a validation step of
        train.py does.
        """
        predict = evaluate.make_predict_many_fn(self.model, self.mesh)
        split, params = self.dataset.test, self.state.params
        kw = dict(batch_size=self.cfg.eval.batch_size, mesh=self.mesh)
        run = lambda: evaluate.evaluate_subsets(predict, params, split, self.task, **kw)
        start = time.perf_counter()
        run()
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        subsets = len(masks.all_subsets(len(self.spec.modalities)))
        rows = len(split) * subsets
        return {
            "rows": len(split), "subsets": subsets, "batch_size": self.cfg.eval.batch_size,
            "first_call_s": first, "time_s": median(times), "samples_per_s": rows / median(times),
        }  # fmt: skip


def time_repeats(fn: Callable[[], float], repeats: int) -> list[float]:
    return [fn() for _ in range(repeats)]


class MatmulPeak:
    """This machine's float32 matmul FLOP/s under jit: a chain of `chain` (N, N) @ (N, N).

    `run(k)` is a contender for `benchmark.interleaved` (seconds per chain),
    so that the peak is measured beside the step it is compared with, under
    the same clocks and neighbours (measured only once, at the start of a
    run, it once read 22% low: docs/performance.md); `measure` times it
    alone.
    """

    def __init__(self, n: int, chain: int):
        k1, k2 = jax.random.split(jax.random.key(0))
        self.a_NxN = jax.random.normal(k1, (n, n), jnp.float32)
        # Scaled by 1/sqrt(N) so that the chain neither overflows nor underflows.
        self.w_NxN = jax.random.normal(k2, (n, n), jnp.float32) / np.sqrt(n)

        def matmuls(x_NxN, w_NxN):
            for _ in range(chain):
                x_NxN = x_NxN @ w_NxN
            return x_NxN

        self.f = jax.jit(matmuls)
        jax.block_until_ready(self.f(self.a_NxN, self.w_NxN))  # compile and warm
        self.n, self.chain, self.flops = n, chain, 2.0 * n**3 * chain

    def run(self, k: int) -> float:
        """k chains back to back; seconds per chain."""
        start = time.perf_counter()
        for _ in range(k):
            out = self.f(self.a_NxN, self.w_NxN)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / k

    def summary(self, times: list[float]) -> dict:
        """The peak from timed runs of `run`: their median."""
        return {"n": self.n, "chain": self.chain, "flops": self.flops, "time_s": median(times),
                "flops_per_s": self.flops / median(times), "times_s": times}  # fmt: skip

    def measure(self, repeats: int) -> dict:
        """The peak measured alone: `summary` of `repeats` timed chains."""
        return self.summary(time_repeats(lambda: self.run(1), repeats))


def contrastive_term(
    batch_size: int, num_modalities: int, embed_dim: int, num_classes: int, repeats: int
) -> dict:
    """Forward + backward of the soft PU weights and contrastive loss alone, at (B, M, P).

    What the objective computes for L_lb + L_ulb (objective.compute_losses):
    `positive_weights` (factored, as the train step asks: no B x B array; the
    RBF kernel of rho reduced in blocks of rows) and
    `weighted_contrastive_loss` (M x B x B logits, in blocks of rows on CPU:
    `robult_jax.contrastive`). Its time against the
    whole step's says how much of the step is the quadratic-in-B part.
    """
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    b, m, p, c = batch_size, num_modalities, embed_dim, num_classes
    s_BxP = models.l2_normalize(jax.random.normal(k1, (b, p)))
    z_BxMxP = models.l2_normalize(jax.random.normal(k2, (b, m, p)))
    logits_BxC = jax.random.normal(k3, (b, c))
    labels_B = jax.random.randint(k4, (b,), 0, c)
    lab_B = jnp.arange(b) < b // 4
    mask_BxM = jnp.ones((b, m), bool)
    task = tasks.get("multiclass")

    def loss(s_BxP, z_BxMxP):
        w_BxB = task.positive_weights(
            labels_B, lab_B, task.beliefs(logits_BxC), s_BxP, mode="soft", sigma=0.5,
            threshold=0.0, label_sigma=0.5, factored=True,  # as objective.compute_losses
        )  # fmt: skip
        pu_BxM, valid_BxM = losses.weighted_contrastive_loss(
            s_BxP, z_BxMxP, w_BxB, mask_BxM, temperature=0.1
        )
        l_lb, l_ulb = losses.reduce_pu_losses(pu_BxM, valid_BxM, lab_B)
        return l_lb + l_ulb

    lower = lambda: jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(s_BxP, z_BxMxP)
    lowered = lower()
    compiled = lowered.compile()
    jax.block_until_ready(compiled(s_BxP, z_BxMxP))

    def once() -> float:
        start = time.perf_counter()
        jax.block_until_ready(compiled(s_BxP, z_BxMxP))
        return time.perf_counter() - start

    mem = compiled.memory_analysis()
    return {
        "time_s": median(time_repeats(once, repeats)),
        **executed_flops(compiled, lowered, lower),
        "xla_temp_bytes": None if mem is None else int(mem.temp_size_in_bytes),
    }
