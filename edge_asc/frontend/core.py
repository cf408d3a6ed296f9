"""numpy log-mel front end: filters, offline features, and the streaming front end.

Device-safe (numpy only). librosa is the reference these functions are tested against
(``librosa.feature.melspectrogram(center=False)`` + ``power_to_db(ref=1, top_db=None)`` + ``feature.delta``), not a
dependency. Internally everything is float64 (so that small mel bands far below the loudest one keep their precision);
outputs are float32.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import AudioInputError
from ..spec import FrontendSpec

# ---------------------------------------------------------------------------------------------------------------
# Filters


def _hz_to_mel(f: np.ndarray, htk: bool) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_t = f >= min_log_hz
    return np.where(log_t, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray, htk: bool) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_t = m >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(spec: FrontendSpec) -> np.ndarray:
    """Triangular mel filters, ``float64[n_mels, n_fft // 2 + 1]`` (same construction as ``librosa.filters.mel``)."""
    fftfreqs = np.fft.rfftfreq(spec.n_fft, d=1.0 / spec.sample_rate)
    lo, hi = _hz_to_mel(np.array(spec.fmin), spec.mel_htk), _hz_to_mel(np.array(spec.fmax_hz), spec.mel_htk)
    mel_f = _mel_to_hz(np.linspace(lo, hi, spec.n_mels + 2), spec.mel_htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if spec.mel_norm == "slaney":
        enorm = 2.0 / (mel_f[2 : spec.n_mels + 2] - mel_f[: spec.n_mels])
        weights *= enorm[:, None]
    return weights


def analysis_window(spec: FrontendSpec) -> np.ndarray:
    """Periodic window of ``win_length`` zero-padded (centred) to ``n_fft``: ``float64[n_fft]``."""
    n = np.arange(spec.win_length, dtype=np.float64)
    if spec.window == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / spec.win_length)
    else:  # hamming
        w = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / spec.win_length)
    lpad = (spec.n_fft - spec.win_length) // 2
    out = np.zeros(spec.n_fft, dtype=np.float64)
    out[lpad : lpad + spec.win_length] = w
    return out


def delta_coefficients(width: int, order: int) -> np.ndarray:
    """Savitzky-Golay derivative taps ``float64[width]``: ``d[t] = sum_k c[k] * x[t - h + k]``, ``h = width // 2``.

    Polynomial order equals the derivative order, as in ``librosa.feature.delta``.
    """
    h = width // 2
    k = np.arange(-h, h + 1, dtype=np.float64)
    vander = k[:, None] ** np.arange(order + 1)[None, :]
    return math.factorial(order) * np.linalg.pinv(vander)[order]


# ---------------------------------------------------------------------------------------------------------------
# Shared math


class _Kernel:
    """Precomputed window, mel matrix and delta taps of one spec."""

    def __init__(self, spec: FrontendSpec) -> None:
        self.spec = spec
        self.window = analysis_window(spec)
        # The mel matrix is sparse (each band is one contiguous run of FFT bins): gather the runs and sum them with
        # reduceat. Cheaper than a dense matmul and, unlike BLAS, independent of how many frames are batched, so
        # streaming and offline features are bit-identical.
        fb = mel_filterbank(spec)
        idx, wts, starts, self.nonempty = [], [], [], []
        pos = 0
        for i, row in enumerate(fb):
            nz = np.flatnonzero(row)
            if nz.size == 0:
                continue
            lo, hi = nz[0], nz[-1] + 1
            idx.append(np.arange(lo, hi))
            wts.append(row[lo:hi])
            starts.append(pos)
            self.nonempty.append(i)
            pos += hi - lo
        self.mel_idx = np.concatenate(idx) if idx else np.zeros(0, np.intp)
        self.mel_w = np.concatenate(wts) if wts else np.zeros(0)
        self.mel_starts = np.asarray(starts, dtype=np.intp)
        self.all_bands = len(self.nonempty) == spec.n_mels
        self.log_floor = spec.amin
        if spec.deltas:
            self.taps = np.stack([delta_coefficients(spec.delta_width, 1), delta_coefficients(spec.delta_width, 2)])
        else:
            self.taps = None

    def logmel(self, frames: np.ndarray) -> np.ndarray:
        """``frames``: float64[T, n_fft] raw samples -> dB log-mel float64[T, n_mels]."""
        spec = np.fft.rfft(frames * self.window, n=self.spec.n_fft, axis=-1)
        mag = spec.real**2 + spec.imag**2
        if self.spec.power == 1.0:
            mag = np.sqrt(mag)
        if self.all_bands:
            mel = np.add.reduceat(mag[:, self.mel_idx] * self.mel_w, self.mel_starts, axis=1)
        else:  # bands narrower than an FFT bin get no energy (librosa warns "Empty filters detected")
            mel = np.zeros((mag.shape[0], self.spec.n_mels))
            if self.nonempty:
                mel[:, self.nonempty] = np.add.reduceat(mag[:, self.mel_idx] * self.mel_w, self.mel_starts, axis=1)
        return 10.0 * np.log10(np.maximum(mel, self.log_floor))

    def features(self, logmel: np.ndarray) -> np.ndarray:
        """dB log-mel float64[T, n_mels] -> float32[C, n_mels, T - 2*pad] with 'valid' deltas."""
        if self.taps is None:
            return np.ascontiguousarray(logmel.T, dtype=np.float32)[None]
        width = self.spec.delta_width
        pad = width // 2
        n_out = logmel.shape[0] - 2 * pad
        if n_out <= 0:
            return np.zeros((3, self.spec.n_mels, 0), dtype=np.float32)
        win = np.lib.stride_tricks.sliding_window_view(logmel, width, axis=0)  # [n_out, n_mels, width]
        d = np.einsum("tmw,cw->cmt", win, self.taps)  # [2, n_mels, n_out]
        out = np.empty((3, self.spec.n_mels, n_out), dtype=np.float32)
        out[0] = logmel[pad : pad + n_out].T
        out[1:] = d
        return out


_KERNELS: dict[FrontendSpec, _Kernel] = {}


def _kernel(spec: FrontendSpec) -> _Kernel:
    k = _KERNELS.get(spec)
    if k is None:
        k = _KERNELS[spec] = _Kernel(spec)
    return k


def _as_mono_float(audio: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise AudioInputError(
            f"{what} must be mono float samples of shape (n,) or (n, 1), got shape {a.shape}: downmix first "
            f"(edge_asc.audio.to_mono)"
        )
    if a.dtype.kind != "f":
        raise AudioInputError(
            f"{what} must be float32/float64 samples in [-1, 1], got dtype {a.dtype}: convert with "
            f"edge_asc.audio.to_float32"
        )
    return a


# ---------------------------------------------------------------------------------------------------------------
# Offline


def offline(audio: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """Features of a whole clip.

    Args:
        audio: float32/float64[n_samples] mono samples at ``spec.sample_rate``, in [-1, 1].
        spec: the front-end specification.

    Returns:
        float32[spec.channels, spec.n_mels, spec.n_frames(n_samples)] in dB (not normalised; see :func:`normalize`).
        A clip shorter than one frame (plus delta context) gives 0 frames.

    Raises:
        AudioInputError: on a non-1-D or non-float input, or non-finite samples.
    """
    a = _as_mono_float(audio, "audio")
    if not np.all(np.isfinite(a)):
        raise AudioInputError("audio contains NaN or infinite samples: clean or re-record the input")
    k = _kernel(spec)
    n_stft = 0 if a.shape[0] < spec.n_fft else 1 + (a.shape[0] - spec.n_fft) // spec.hop_length
    if n_stft == 0:
        return np.zeros((spec.channels, spec.n_mels, 0), dtype=np.float32)
    a64 = np.ascontiguousarray(a, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(a64, spec.n_fft)[:: spec.hop_length][:n_stft]
    return k.features(k.logmel(frames))


def normalize(features: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """``(features - norm_mean) / norm_std`` per channel; ``features`` is float[C, n_mels, T] (or [N, C, n_mels, T])."""
    mean = np.asarray(spec.norm_mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.norm_std, dtype=np.float32).reshape(-1, 1, 1)
    return ((features - mean) / std).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------------------
# Streaming


class StreamingFrontend:
    """Incremental front end: ``push(block)`` returns exactly the feature frames that became complete.

    Concatenating every ``push`` output over any split of a signal equals :func:`offline` on the whole signal
    (center=False framing makes this hold by construction). Samples live in a preallocated float64 buffer of
    ``n_fft + chunk_frames * hop_length`` samples; a long block is processed in chunks of that size, so memory does
    not grow with the block. Each STFT frame is computed once. With deltas, a frame is emitted ``delta_pad`` frames
    after its STFT frame completes (the look-ahead 'valid' edges imply), from a history of ``delta_width - 1`` frames.
    """

    def __init__(self, spec: FrontendSpec, *, chunk_frames: int = 64) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.spec = spec
        self._k = _kernel(spec)
        self._cap = spec.n_fft + chunk_frames * spec.hop_length
        self._buf = np.zeros(self._cap, dtype=np.float64)
        self._fill = 0
        hist = spec.delta_width - 1 if spec.deltas else 0
        self._hist = np.zeros((hist, spec.n_mels), dtype=np.float64)
        self._hist_fill = 0
        self.samples_pushed = 0
        self.frames_emitted = 0

    def reset(self) -> None:
        """Forget all buffered samples and delta history (e.g. after a gap or a device restart)."""
        self._fill = 0
        self._hist_fill = 0
        self.samples_pushed = 0
        self.frames_emitted = 0

    def push(self, block: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Add samples; return the new frames, ``float32[channels, n_mels, n_new]`` (``n_new`` may be 0).

        Args:
            block: float32/float64[n] (or [n, 1]) mono samples in [-1, 1]; any length, including 0 and 1.
            sample_rate: if given, must equal ``spec.sample_rate`` (resample first otherwise).

        Raises:
            AudioInputError: wrong rate, shape, dtype, or non-finite samples (the stream state is unchanged).
        """
        if sample_rate is not None and int(sample_rate) != self.spec.sample_rate:
            raise AudioInputError(
                f"block sample rate {sample_rate} Hz differs from the front end's {self.spec.sample_rate} Hz: "
                f"resample first (edge_asc.audio.StreamResampler)"
            )
        a = _as_mono_float(block, "block")
        if a.size and not np.all(np.isfinite(a)):
            raise AudioInputError("block contains NaN or infinite samples: check the audio source")
        outs = []
        pos, n = 0, a.shape[0]
        spec = self.spec
        while pos < n:
            take = min(self._cap - self._fill, n - pos)
            self._buf[self._fill : self._fill + take] = a[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill < spec.n_fft:
                continue
            n_new = 1 + (self._fill - spec.n_fft) // spec.hop_length
            frames = np.lib.stride_tricks.as_strided(
                self._buf, shape=(n_new, spec.n_fft), strides=(spec.hop_length * 8, 8), writeable=False
            )
            lm = self._k.logmel(frames)
            consumed = n_new * spec.hop_length
            keep = self._fill - consumed
            self._buf[:keep] = self._buf[consumed : self._fill].copy()
            self._fill = keep
            outs.append(self._emit(lm))
        self.samples_pushed += n
        if not outs:
            return np.zeros((spec.channels, spec.n_mels, 0), dtype=np.float32)
        out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        self.frames_emitted += out.shape[-1]
        return out

    def _emit(self, lm: np.ndarray) -> np.ndarray:
        if not self.spec.deltas:
            return self._k.features(lm)
        h = self._hist.shape[0]
        ext = np.concatenate([self._hist[h - self._hist_fill :], lm], axis=0) if self._hist_fill else lm
        out = self._k.features(ext)
        tail = ext[-h:]
        self._hist[h - tail.shape[0] :] = tail
        self._hist_fill = tail.shape[0]
        return out
