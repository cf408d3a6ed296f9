"""Training augmentations of the paper's recipe, each switchable, on numpy batches with an explicit Generator.

Order applied by the training loop (each step optional): random time crop (per clip) -> device impulse response
(DIR, per clip, on the dB features) -> normalisation -> Freq-MixStyle (per batch) -> random time/frequency shift ->
SpecAugment masks -> mixup. Batches are normalised features float32[B, C, n_mels, W]; masks write 0 (the
training-set mean after normalisation).

DIR augmentation works on cached log-mel features, not on waveforms: a linear time-invariant filter ``h`` multiplies
the spectrum, so for a signal whose spectrum is smooth within each mel band the band energy changes by the band's
mean power gain ``G[m] = sum_k W[m, k] |H_k|^2 / sum_k W[m, k]`` (``W`` the mel filterbank), i.e. ``+10 log10 G[m]``
dB on every frame of the log-mel (deltas are unchanged by a constant offset). The approximation ignores the IR's
smearing across frames (small when the IR is short against the FFT window) and the log floor; docs/distillation.md
and tests/test_device_aug.py measure it against convolving the waveform and running the front end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AudioInputError, ConfigError
from ..frontend import tile_to_window, window_starts
from ..spec import FrontendSpec


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Switches and sizes of the augmentations. ``for_window`` scales the paper's sizes to a model input."""

    random_crop: bool = True
    """True: a random window of each clip per epoch (paper: 423 -> 400 frames); False: the centre window."""
    shift_time: int = 0
    """max |shift| in frames of a random time (width) shift per sample, edges filled by the nearest frame; 0 = off."""
    shift_freq: int = 0
    """max |shift| in mel bins of a random frequency (height) shift per sample, nearest fill; 0 = off."""
    specaugment: bool = True
    """apply SpecAugment masks."""
    time_masks: int = 1
    """number of time masks (paper: 1)."""
    time_mask_max: int = 80
    """max width of a time mask in frames (paper: 80 of 400)."""
    freq_masks: int = 2
    """number of frequency masks (paper: 2)."""
    freq_mask_max: int = 30
    """max height of a frequency mask in mel bins (paper: 30 of 256)."""
    mixup_alpha: float = 0.3
    """mixup Beta(alpha, alpha) parameter (paper: 0.3); 0 = off."""
    freq_mixstyle: float = 0.0
    """probability per batch of Freq-MixStyle (:func:`freq_mixstyle`; CP-JKU: 0.4); 0 = off."""
    freq_mixstyle_alpha: float = 0.3
    """Freq-MixStyle Beta(alpha, alpha) parameter of the per-clip mixing weight (CP-JKU: 0.3)."""
    dir: float = 0.0
    """probability per clip of device impulse response augmentation (:func:`apply_dir`); 0 = off."""
    dir_folder: str | None = None
    """folder of impulse-response WAVs (e.g. MicIRP) for DIR; None = the synthetic device family
    (:func:`edge_asc.data.devices.dir_family`)."""

    def __post_init__(self) -> None:
        for name in ("shift_time", "shift_freq", "time_masks", "time_mask_max", "freq_masks", "freq_mask_max"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"augment {name} must be a non-negative integer, got {v!r}")
        if not (self.mixup_alpha >= 0):
            raise ConfigError(f"mixup_alpha must be >= 0, got {self.mixup_alpha!r}")
        for name in ("freq_mixstyle", "dir"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ConfigError(f"augment {name} is a probability in [0, 1], got {v!r}")
        if not (self.freq_mixstyle_alpha > 0):
            raise ConfigError(f"freq_mixstyle_alpha must be > 0, got {self.freq_mixstyle_alpha!r}")

    @classmethod
    def for_window(cls, n_mels: int, window_frames: int, **overrides: Any) -> AugmentConfig:
        """The paper's recipe scaled from its 256 x 400 input to ``n_mels`` x ``window_frames``: time mask <= 80/400
        of the window, frequency masks <= 30/256 of the bins, shifts up to 10 % of the window and 5 % of the bins."""
        kw: dict[str, Any] = {
            "time_mask_max": max(1, round(80 * window_frames / 400)),
            "freq_mask_max": max(1, round(30 * n_mels / 256)),
            "shift_time": max(1, round(0.1 * window_frames)),
            "shift_freq": max(1, round(0.05 * n_mels)),
        }
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def off(cls) -> AugmentConfig:
        """Every augmentation disabled (centre crop, no shift, no masks, no mixup)."""
        return cls(random_crop=False, shift_time=0, shift_freq=0, specaugment=False, mixup_alpha=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        return cls(**dict(d))


def crop(features: np.ndarray, window_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """One window float32[C, n_mels, window_frames] of a clip float[C, n_mels, T].

    The start is one of :func:`edge_asc.frontend.window_starts` at hop 1 (every frame): ``rng`` given, uniform over
    them (``[0, T - window_frames]``); None, the centre one (``(T - W) // 2``). A clip shorter than the window is
    repeated cyclically (:func:`edge_asc.frontend.tile_to_window`, as every window of the runtime is).
    """
    t = features.shape[2]
    if t <= window_frames:
        return tile_to_window(features, window_frames)
    starts = window_starts(t, window_frames, 1)
    start = starts[int(rng.integers(0, len(starts)))] if rng is not None else starts[(len(starts) - 1) // 2]
    return features[:, :, start:start + window_frames]


def random_shift(batch: np.ndarray, max_time: int, max_freq: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each sample by integers dt in [-max_time, max_time] frames and df in [-max_freq, max_freq] bins:
    ``out[b, c, f, t] = x[b, c, clip(f - df), clip(t - dt)]`` (nearest-edge fill, like Keras' width/height shift)."""
    b, _, m, w = batch.shape
    out = np.empty_like(batch)
    dts = rng.integers(-max_time, max_time + 1, size=b) if max_time else np.zeros(b, int)
    dfs = rng.integers(-max_freq, max_freq + 1, size=b) if max_freq else np.zeros(b, int)
    for i in range(b):
        ti = np.clip(np.arange(w) - dts[i], 0, w - 1)
        fi = np.clip(np.arange(m) - dfs[i], 0, m - 1)
        out[i] = batch[i][:, fi][:, :, ti]
    return out


def spec_augment(batch: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, value: float = 0.0) -> np.ndarray:
    """SpecAugment: per sample ``time_masks`` masks of width uniform in [0, time_mask_max] frames and ``freq_masks``
    masks of height uniform in [0, freq_mask_max] bins, at uniform positions, set to ``value`` in every channel."""
    out = batch.copy()
    b, _, m, w = out.shape
    for i in range(b):
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, min(cfg.time_mask_max, w) + 1))
            t0 = int(rng.integers(0, w - width + 1))
            out[i, :, :, t0:t0 + width] = value
        for _ in range(cfg.freq_masks):
            height = int(rng.integers(0, min(cfg.freq_mask_max, m) + 1))
            f0 = int(rng.integers(0, m - height + 1))
            out[i, :, f0:f0 + height, :] = value
    return out


def mixup(batch: np.ndarray, targets: np.ndarray, alpha: float,
          rng: np.random.Generator, *, drawn: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mixup: ``lam ~ Beta(alpha, alpha)``, a random permutation ``p``; returns ``(lam * x + (1 - lam) * x[p],
    lam * y + (1 - lam) * y[p], lam)`` with ``targets`` float32[B, K] one-hot / soft labels. ``drawn``: a dict that
    receives ``lam`` and ``perm`` (for mixing anything else per clip the same way, e.g. cached teacher logits)."""
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(batch.shape[0])
    if drawn is not None:
        drawn.update(lam=lam, perm=perm)
    x = (lam * batch + (1.0 - lam) * batch[perm]).astype(np.float32)
    y = (lam * targets + (1.0 - lam) * targets[perm]).astype(np.float32)
    return x, y, lam


def freq_mixstyle(batch: np.ndarray, p: float, alpha: float, rng: np.random.Generator,
                  eps: float = 1e-6) -> np.ndarray:
    """Freq-MixStyle (Schmid et al., CP-JKU, DCASE 2022/2023): with probability ``p`` for the batch, each clip's
    per-frequency-band statistics (mean and standard deviation over channels and frames, ``[B, 1, n_mels, 1]``) are
    replaced by a mix with those of a random other clip of the batch:
    ``out = (x - mu) / sigma * (lam * sigma + (1 - lam) * sigma[perm]) + lam * mu + (1 - lam) * mu[perm]`` with
    ``lam ~ Beta(alpha, alpha)`` per clip and ``sigma = sqrt(var + eps)``. A device's colouration is mostly a fixed
    per-band gain, i.e. a per-band mean; mixing these across clips keeps the scene content and varies the "device".
    Returns ``batch`` itself when not applied (``p = 0`` draws no random numbers)."""
    if p <= 0 or rng.random() >= p:
        return batch
    b = batch.shape[0]
    x = batch.astype(np.float64)
    mu = x.mean(axis=(1, 3), keepdims=True)
    sig = np.sqrt(x.var(axis=(1, 3), keepdims=True) + eps)
    lam = rng.beta(alpha, alpha, size=(b, 1, 1, 1))
    perm = rng.permutation(b)
    mu_mix = lam * mu + (1.0 - lam) * mu[perm]
    sig_mix = lam * sig + (1.0 - lam) * sig[perm]
    return ((x - mu) / sig * sig_mix + mu_mix).astype(np.float32)


def ir_band_gains_db(ir: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """Per-mel-band gain in dB, ``float64[n_mels]``, of filtering with impulse response ``ir`` (``float[L]``
    at ``spec.sample_rate``): ``10 log10(sum_k W[m, k] |H(f_k)|^p / sum_k W[m, k])`` (``p = spec.power``, as the
    front end's bands sum ``|X|^p``) with the front end's mel
    filters ``W`` interpolated onto a frequency grid fine enough for the IR (at least ``spec.n_fft`` points and 4x
    the IR length), so a long IR's fine structure is averaged over each band rather than sampled. Bands with no
    filter weight get 0 dB.

    Raises:
        ConfigError: an empty or all-zero ``ir``.
    """
    from ..frontend.core import mel_filterbank

    ir = np.asarray(ir, dtype=np.float64).ravel()
    if ir.size == 0 or not np.any(ir):
        raise ConfigError("an impulse response is empty or all zeros")
    n = 1 << int(np.ceil(np.log2(max(spec.n_fft, 4 * ir.size))))
    power = np.abs(np.fft.rfft(ir, n)) ** spec.power  # the front end's mel bands sum |X| ** power
    f_fine = np.fft.rfftfreq(n, 1.0 / spec.sample_rate)
    f_coarse = np.fft.rfftfreq(spec.n_fft, 1.0 / spec.sample_rate)
    fb = mel_filterbank(spec)
    w = np.stack([np.interp(f_fine, f_coarse, row) for row in fb])
    den = w.sum(axis=1)
    num = w @ power
    out = np.zeros(spec.n_mels)
    ok = den > 0
    out[ok] = 10.0 * np.log10(np.maximum(num[ok] / den[ok], 1e-20))
    return out


def load_ir_folder(folder: str, sample_rate: int) -> list[np.ndarray]:
    """The impulse responses in ``folder`` (``*.wav``, ``*.flac``, sorted by name), mono float32 resampled to
    ``sample_rate`` by :func:`edge_asc.audio.load_audio`.

    Raises:
        ConfigError: the folder is missing or holds no WAV/FLAC file, or a file is unreadable, empty or all zeros
            (one line naming the file).
    """
    from pathlib import Path

    from ..audio import load_audio

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--dir-folder {folder!r} is not a folder: give a folder of impulse-response WAVs")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".wav", ".flac") and p.is_file())
    if not files:
        raise ConfigError(f"--dir-folder {folder!r} holds no .wav or .flac impulse responses")
    irs = []
    for p in files:
        try:
            x, _ = load_audio(p, sample_rate)
        except AudioInputError as exc:
            raise ConfigError(f"--dir-folder: bad impulse response: {exc}") from None
        if not np.any(x):
            raise ConfigError(f"--dir-folder: impulse response {str(p)!r} is all zeros")
        irs.append(x)
    return irs


def dir_gain_bank(aug: AugmentConfig, spec: FrontendSpec) -> np.ndarray | None:
    """The DIR bank of a run: ``float32[K, n_mels]`` dB gains, one row per impulse response (from ``aug.dir_folder``
    or the synthetic device family), each row shifted to zero mean over the bands so that DIR changes the colour of a
    clip, not its level (an IR's overall gain is arbitrary); None when DIR is off.

    Raises:
        ConfigError: a bad ``dir_folder`` (:func:`load_ir_folder`).
    """
    if aug.dir <= 0:
        return None
    if aug.dir_folder is not None:
        irs = load_ir_folder(aug.dir_folder, spec.sample_rate)
    else:
        from ..data.devices import dir_family, linear_impulse_response

        irs = [linear_impulse_response(d, spec.sample_rate) for d in dir_family()]
    g = np.stack([ir_band_gains_db(ir, spec) for ir in irs])
    return (g - g.mean(axis=1, keepdims=True)).astype(np.float32)


def apply_dir(features: np.ndarray, gains_db: np.ndarray, p: float, rng: np.random.Generator,
              floor_db: float) -> np.ndarray:
    """DIR augmentation of un-normalised dB features ``float32[B, C, n_mels, W]``: each clip, with probability
    ``p``, gets the per-band gains of a uniformly drawn row of ``gains_db`` (``float[K, n_mels]``, dB) added to its
    log-mel channel (channel 0; delta channels are unchanged by a constant offset), clipped below at the front end's
    log floor ``floor_db``. Returns a new array."""
    out = features.copy()
    b = out.shape[0]
    hit = rng.random(b) < p
    pick = rng.integers(0, gains_db.shape[0], size=b)
    for i in np.flatnonzero(hit):
        out[i, 0] = np.maximum(out[i, 0] + gains_db[pick[i]][:, None], floor_db)
    return out
