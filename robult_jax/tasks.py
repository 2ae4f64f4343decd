"""One object per task type: everything that differs between multi-class, multi-label
and regression data, chosen once with `get(spec.task)` (docs/task_types.md).

A `Task` says which supervised loss to train with, what the PU positive
weights read as the classifier's belief and how they compare two samples, how
to turn logits into probabilities and back, which metrics to report and which
one selects models. Training code (jnp, jit-able) and evaluation code (numpy,
on host) both go through it, so no module branches on the task string.

    >>> task = get("multiclass")
    >>> task.primary_metric, task.higher_is_better
    ('accuracy', True)
    >>> task.probs(jnp.zeros((1, 4)))
    Array([[0.25, 0.25, 0.25, 0.25]], dtype=float32)

Shape legend: B batch, N evaluation samples, C classes (or outputs), P
projection width.
"""

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from robult_jax import losses, metrics, task_weights
from robult_jax.data.types import TASKS as NAMES  # the task names, defined with DatasetSpec


def _float(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


@dataclasses.dataclass(frozen=True)
class Task:
    """The interface; the three instances below are the only implementations.

    Frozen and hashable, so a Task may be a static argument of `jax.jit`.
    """

    name: str  # "multiclass" | "multilabel" | "regression"
    primary_metric: str  # selects checkpoints and heads reports
    uses_centroids: bool  # the per-class EMA fallback of the PU weights (multiclass only)

    @property
    def higher_is_better(self) -> bool:
        """Direction of `primary_metric` (from `metrics.HIGHER_IS_BETTER`)."""
        return metrics.HIGHER_IS_BETTER[self.primary_metric]

    # Set by each implementation: its functions from `losses`, `metrics` and `task_weights`.
    _loss: ClassVar[Callable[[jax.Array, jax.Array], jax.Array]]
    _metrics: ClassVar[Callable[[np.ndarray, np.ndarray], dict[str, float]]]
    _weights: ClassVar[Callable[..., jax.Array]]
    _weight_args: ClassVar[tuple[str, ...]]  # the optional arguments that _weights takes

    def loss(self, logits_BxC: jax.Array, labels: jax.Array) -> jax.Array:
        """(B,) per-example supervised loss L_sup (docs/method.md 3.1)."""
        return self._loss(logits_BxC, labels)

    def probs(self, logits_BxC: jax.Array) -> jax.Array:
        """Softmax (B, C), sigmoid (B, C) or the value (B, 1); differentiable."""
        raise NotImplementedError

    def beliefs(self, logits_BxC: jax.Array) -> jax.Array:
        """What the PU weights read as the classifier's belief: `probs` under stop_gradient.

        The beliefs decide soft positives; they are targets, not paths for gradients.
        """
        return self.probs(jax.lax.stop_gradient(logits_BxC))

    def logits_from_probs(self, p_BxC: jax.Array) -> jax.Array:
        """Finite inverse of `probs` on [0, 1]: probs(logits_from_probs(p)) == p up to clipping.

        Lets a mean of probabilities (over modalities) stand where logits are
        expected: the argmax (multiclass), sign vs p > 0.5 (multilabel) or value
        (regression) of the result is p's.
        """
        raise NotImplementedError

    def positive_weights(
        self, labels: jax.Array, is_labeled_B: jax.Array, beliefs: jax.Array, s_BxP: jax.Array,
        *, mode: str, sigma: float, threshold: float, label_sigma: float,
        centroids_CxP: jax.Array | None = None, centroid_valid_C: jax.Array | None = None,
        factored: bool = False,
    ) -> jax.Array:  # fmt: skip
        """(B, B) PU positive weights by the task's `task_weights` rule.

        Arguments the task does not use are ignored, so callers pass all of them.
        `factored=True` asks for a `contrastive.FactoredWeights` where the rule
        has that form (multi-class); the other rules return the (B, B) array,
        which `losses.weighted_contrastive_loss` takes as well.
        """
        given = dict(
            threshold=threshold,
            label_sigma=label_sigma,
            centroids_CxP=centroids_CxP,
            centroid_valid_C=centroid_valid_C,
            factored=factored,
        )
        kw = {k: given[k] for k in self._weight_args}
        return self._weights(labels, is_labeled_B, beliefs, s_BxP, mode=mode, sigma=sigma, **kw)

    def train_metrics(
        self, logits_BxC: jax.Array, labels: jax.Array, is_labeled_B: jax.Array
    ) -> dict[str, jax.Array]:
        """Cheap jnp metrics for the train log; none by default."""
        del logits_BxC, labels, is_labeled_B
        return {}

    def metrics(self, outputs_NxC: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Evaluation metrics (numpy, `robult_jax.metrics`) of logits (N, C) against labels."""
        return self._metrics(outputs_NxC, labels)

    def outputs(self, logits_NxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities float32, predictions) in numpy, as `predict` returns them."""
        raise NotImplementedError


class _Multiclass(Task):
    """Softmax classification; labels (B,) int in [0, C)."""

    _loss = staticmethod(losses.multiclass_loss)
    _metrics = staticmethod(metrics.classification_metrics)
    _weights = staticmethod(task_weights.multiclass_weights)
    _weight_args = ("threshold", "centroids_CxP", "centroid_valid_C", "factored")

    def probs(self, logits_BxC):
        return jax.nn.softmax(logits_BxC, axis=-1)

    def logits_from_probs(self, p_BxC):
        p_BxC = _float(p_BxC)
        x_BxC = jnp.log(jnp.clip(p_BxC, jnp.finfo(p_BxC.dtype).tiny, 1.0))
        # log() rounds nearly equal probabilities (e.g. 0.1 and the next float)
        # to the same value, and a tie would let argmax pick another class:
        # lift the winner of p one float above its best rival where needed.
        top_BxC = jax.nn.one_hot(jnp.argmax(p_BxC, axis=-1), p_BxC.shape[-1], dtype=bool)
        rival_Bx1 = jnp.max(jnp.where(top_BxC, -jnp.inf, x_BxC), axis=-1, keepdims=True)
        # The lift is a tie-break, not a path for gradients (nextafter has no JVP).
        lifted_Bx1 = jnp.nextafter(jax.lax.stop_gradient(rival_Bx1), jnp.inf)
        return jnp.where(top_BxC, jnp.maximum(x_BxC, lifted_Bx1), x_BxC)

    def train_metrics(self, logits_BxC, labels, is_labeled_B):
        correct_B = (jnp.argmax(logits_BxC, axis=-1) == labels).astype(jnp.float32)
        return {"labeled_accuracy": losses.masked_mean(correct_B, is_labeled_B)}

    def outputs(self, logits_NxC):
        logits_NxC = np.asarray(logits_NxC)
        z_NxC = np.exp(logits_NxC - logits_NxC.max(axis=1, keepdims=True))
        probs_NxC = z_NxC / z_NxC.sum(axis=1, keepdims=True)
        return probs_NxC.astype(np.float32), logits_NxC.argmax(axis=1).astype(np.int32)


class _Multilabel(Task):
    """Independent sigmoid per label; labels (B, C) in [0, 1]."""

    _loss = staticmethod(losses.multilabel_loss)
    _metrics = staticmethod(metrics.multilabel_metrics)
    _weights = staticmethod(task_weights.multilabel_weights)
    _weight_args = ("threshold",)

    def probs(self, logits_BxC):
        return jax.nn.sigmoid(logits_BxC)

    def logits_from_probs(self, p_BxC):
        p_BxC = _float(p_BxC)
        info = jnp.finfo(p_BxC.dtype)
        p_BxC = jnp.clip(p_BxC, info.tiny, 1 - info.eps)
        x_BxC = jnp.log(p_BxC) - jnp.log1p(-p_BxC)
        # Metrics decide by logit > 0, predictions by p > 0.5: pin the sign to
        # p's side of 0.5 so that rounding near 0.5 cannot flip a decision.
        pos_BxC = jnp.maximum(x_BxC, info.tiny)
        neg_BxC = jnp.minimum(x_BxC, -info.tiny)
        return jnp.where(p_BxC > 0.5, pos_BxC, jnp.where(p_BxC < 0.5, neg_BxC, 0.0))

    def outputs(self, logits_NxC):
        probs_NxC = (1.0 / (1.0 + np.exp(-np.asarray(logits_NxC)))).astype(np.float32)
        return probs_NxC, (probs_NxC > 0.5).astype(np.int32)


class _Regression(Task):
    """One real-valued output, (B, 1); labels (B,) float; L1 loss; no confidence, no classes."""

    _loss = staticmethod(losses.regression_loss)
    _metrics = staticmethod(metrics.regression_metrics)
    _weights = staticmethod(task_weights.regression_weights)
    _weight_args = ("label_sigma",)

    def probs(self, logits_BxC):
        return logits_BxC

    def logits_from_probs(self, p_BxC):
        return p_BxC

    def outputs(self, logits_NxC):
        logits_NxC = np.asarray(logits_NxC)
        return logits_NxC.astype(np.float32), logits_NxC[:, 0].astype(np.float32)


MULTICLASS = _Multiclass("multiclass", primary_metric="accuracy", uses_centroids=True)
# MultiBench: macro-F1 for MM-IMDb; MAE is CMU-MOSI's usual headline.
MULTILABEL = _Multilabel("multilabel", primary_metric="macro_f1", uses_centroids=False)
REGRESSION = _Regression("regression", primary_metric="mae", uses_centroids=False)
_BY_NAME = {t.name: t for t in (MULTICLASS, MULTILABEL, REGRESSION)}  # in NAMES order


def get(name: str) -> Task:
    """The Task of a dataset's `task` string; ValueError listing NAMES for any other."""
    if name not in _BY_NAME:
        raise ValueError(f"Unknown task {name!r}; allowed values are {NAMES}.")
    return _BY_NAME[name]
