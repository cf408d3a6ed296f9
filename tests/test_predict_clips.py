"""predict_clips streams: one clip read at a time, at most one batch of windows held, same posteriors as stacking."""

from __future__ import annotations

import numpy as np
from conftest import require

torch = require("torch")


class OnceInOrder:
    """A clip sequence that fails if a clip is read twice or out of order (as a memory-mapped store read lazily)."""

    def __init__(self, clips):
        self.clips, self.next = clips, 0

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        assert i == self.next, f"clip {i} read, expected {self.next}"
        self.next += 1
        return self.clips[i]


def test_predict_clips_streams_and_matches_stacked_windows():
    from edge_asc.frontend.windows import windows
    from edge_asc.metrics import softmax
    from edge_asc.model import build_model, resolve_preset
    from edge_asc.spec import PRESETS
    from edge_asc.train.evaluate import normalize, predict_clips

    cfg = resolve_preset("micro").config
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    spec, w = PRESETS["edge"], cfg.n_frames
    rng = np.random.default_rng(0)
    clips = [rng.normal(-40, 10, (cfg.in_channels, cfg.n_mels, int(t))).astype(np.float32)
             for t in rng.integers(w // 3, 4 * w, 23)]
    seq = OnceInOrder(clips)
    got = predict_clips(model, seq, spec, w, batch_size=5)
    assert seq.next == len(clips)
    with torch.no_grad():  # the definition: every clip's window softmaxes, averaged
        want = np.stack([softmax(model(torch.from_numpy(windows(normalize(c, spec), w))).numpy()).mean(0)
                         for c in clips])
    assert got.shape == (23, cfg.n_classes)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert np.array_equal(predict_clips(model, clips, spec, w, batch_size=5), got)
    with torch.no_grad():  # average="logits": the clip's mean window logits (what a distillation teacher gives)
        want_z = np.stack([model(torch.from_numpy(windows(normalize(c, spec), w))).numpy().mean(0) for c in clips])
    np.testing.assert_allclose(predict_clips(model, clips, spec, w, batch_size=5, average="logits"), want_z,
                               atol=2e-5)
