"""A checkpoint's bytes (and so its recorded sha256) depend only on its tensors, not on the process that wrote it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SAVE = textwrap.dedent("""
    import hashlib, sys, torch
    from edge_asc.model import build_model, resolve_preset
    from edge_asc.spec import PRESETS
    from edge_asc.train.checkpoint import CheckpointMeta, save_checkpoint
    torch.manual_seed(0)
    cfg = resolve_preset("micro").config
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, *cfg.input_shape[1:])).sum().backward()
    opt.step()
    meta = save_checkpoint(sys.argv[1], model, CheckpointMeta(model_config=cfg, frontend=PRESETS["micro"],
                                                              labels=[str(i) for i in range(cfg.n_classes)],
                                                              window_frames=cfg.n_frames), opt)
    print(meta.weights_sha256, meta.optimizer_sha256)
""")


def test_checkpoint_bytes_do_not_depend_on_the_process(tmp_path):
    shas = {subprocess.run([sys.executable, "-c", SAVE, str(tmp_path / f"run{i}")], capture_output=True, text=True,
                           check=True, timeout=120).stdout for i in range(4)}
    assert len(shas) == 1, shas
    first = [(tmp_path / "run0" / f).read_bytes() for f in ("model.safetensors", "optimizer.safetensors")]
    assert [(tmp_path / "run3" / f).read_bytes() for f in ("model.safetensors", "optimizer.safetensors")] == first
