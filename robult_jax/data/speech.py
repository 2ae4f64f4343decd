"""Spoken digits synthesised offline by eSpeak NG, and their log-mel spectrograms.

Used by the AV-MNIST-style (synthetic audio) dataset `av_digits`. No recorded
spoken-digit corpus can be downloaded here, so utterances come from the eSpeak
NG formant synthesiser that PyPI `espeakng-loader` ships (shared library plus
voice data). We call the C API through ctypes and never import anything that
plays audio.

Speakers are simulated by an English accent ("en", "en-us", "en-gb-x-rp", ...)
combined with a voice variant ("+m1".."+m8", "+f1".."+f5", named variants),
plus a random speaking rate and base pitch per utterance.

Not bit-reproducible: eSpeak NG's output for the same text and settings
varies by a few samples between calls and processes (measured: 9821..9842
samples for "seven"; espeak_ng_SetRandSeed and re-initialising do not fix
it), so spectrograms of repeated syntheses agree closely but not exactly.

Spectrogram (fixed; changing it means a new dataset version): the utterance is
trimmed of leading/trailing silence, a Hann-window STFT with N_FFT=512 (23 ms
at 22050 Hz) and HOP=128 (5.8 ms) gives magnitudes, a triangular mel
filterbank (N_MELS=32 bands, 50..8000 Hz) pools them, then log(1e-3 + x);
finally the time axis is resized by linear interpolation to N_FRAMES=32
frames. Resizing (rather than padding) makes the image speed-invariant and
uses every frame; speaking rate is a nuisance variable here. Output shape:
(N_MELS, N_FRAMES) = (F, T) = (32, 32) float32.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import threading

import numpy as np

SAMPLE_RATE = 22050  # what eSpeak NG produces
N_FFT = 512
HOP = 128
N_MELS = 32  # F
N_FRAMES = 32  # T
FMIN, FMAX = 50.0, 8000.0
INSTALL_HINT = "pip install espeakng-loader==0.2.4"

# eSpeak NG C constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def find_espeak() -> tuple[str, str]:
    """(library path, data path) inside espeakng-loader, found without importing it."""
    spec = importlib.util.find_spec("espeakng_loader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "Synthesising the spoken digits needs eSpeak NG from the espeakng-loader "
            f"package, which is not installed. Install it with: {INSTALL_HINT}"
        )
    root = spec.submodule_search_locations[0]
    names = ("libespeak-ng.so", "libespeak-ng.dylib", "espeak-ng.dll")
    lib = next((os.path.join(root, n) for n in names if os.path.exists(os.path.join(root, n))), "")
    data = os.path.join(root, "espeak-ng-data")
    if not lib or not os.path.isdir(data):
        raise FileNotFoundError(
            f"{root} lacks the eSpeak NG library or espeak-ng-data; reinstall with: "
            f"pip install --force-reinstall {INSTALL_HINT.split()[-1]}"
        )
    return lib, data


class ESpeak:
    """Synchronous eSpeak NG synthesiser returning int16 samples at 22050 Hz.

    eSpeak keeps global state in the process, so there is one instance (see
    `get_espeak`) and a lock around each utterance.
    """

    def __init__(self):
        lib_path, data_path = find_espeak()
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise RuntimeError(
                f"espeak_Initialize({data_path}) returned {rate}, expected sample rate "
                f"{SAMPLE_RATE}; reinstall espeakng-loader: {INSTALL_HINT}"
            )
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes would otherwise free the callback thunk.
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _collect(self, wav, num_samples, events) -> int:
        del events
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = keep synthesising

    def synthesize(self, text: str, *, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
        """int16 samples of `text` by `voice` ("en-us+f2"); rate in words/min, pitch 0..100."""
        if not 80 <= rate <= 450 or not 0 <= pitch <= 100:
            raise ValueError(
                f"eSpeak rate must be in 80..450 and pitch in 0..100, got {rate}, {pitch}."
            )
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(
                    f"eSpeak NG has no voice {voice!r}; "
                    "use '<language>+<variant>', e.g. 'en-us+m3'."
                )
            self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            self._chunks = []
            buf = ctypes.create_string_buffer(text.encode())
            err = self._lib.espeak_Synth(
                buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self._lib.espeak_Synchronize()
            if err != 0:
                raise RuntimeError(
                    f"espeak_Synth({text!r}, voice={voice!r}) failed with code {err}."
                )
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros((0,), np.int16)


@functools.cache
def get_espeak() -> ESpeak:
    """The process-wide synthesiser (initialised on first use; a failed start is retried)."""
    return ESpeak()


def espeak_synthesize(text: str, *, voice: str, rate: int, pitch: int) -> np.ndarray:
    """Default `SynthFn` of the av_digits builder: eSpeak NG, int16 at SAMPLE_RATE."""
    return get_espeak().synthesize(text, voice=voice, rate=rate, pitch=pitch)


def trim_silence(audio: np.ndarray, *, rel_threshold: float = 0.02) -> np.ndarray:
    """Drops leading/trailing samples quieter than rel_threshold * peak."""
    loud = np.flatnonzero(np.abs(audio) > rel_threshold * max(np.abs(audio).max(initial=0), 1e-9))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the mel scale."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(FMIN), mel(FMAX), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None)


_MEL = mel_filterbank()


def log_mel_spectrogram(audio: np.ndarray, *, trim: bool = True) -> np.ndarray:
    """(N_MELS, N_FRAMES) float32 log-mel spectrogram of 1-D audio at SAMPLE_RATE.

    int16 input is scaled to [-1, 1]; float input is used as is. Audio shorter
    than one window is zero-padded; empty audio is an error. Pass trim=False
    for audio already trimmed before noise was added (noise defeats trimming).
    """
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"audio must be a non-empty 1-D array, got shape {audio.shape}.")
    x = audio.astype(np.float64)
    if audio.dtype == np.int16:
        x /= 32768.0
    if trim:
        x = trim_silence(x)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    n = 1 + (x.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n]  # (n, N_FFT)
    mag = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=-1))  # (n, N_FFT/2+1)
    # einsum, not `@`: tiny BLAS calls with multi-threaded OpenBLAS were 10x slower here.
    logmel = np.log(1e-3 + np.einsum("fk,nk->fn", _MEL, mag))  # (F, n)
    # Linear interpolation of each band onto N_FRAMES evenly spaced times.
    src = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    dst = np.linspace(0.0, 1.0, N_FRAMES)
    out = np.stack([np.interp(dst, src, band) for band in logmel])
    return out.astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """float64 audio in [-1, 1] scale plus white noise at `snr_db` (signal power / noise power)."""
    x = audio.astype(np.float64) / (32768.0 if audio.dtype == np.int16 else 1.0)
    power = np.mean(x**2) if x.size else 0.0
    sd = np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return x + rng.normal(0.0, sd, size=x.shape)
