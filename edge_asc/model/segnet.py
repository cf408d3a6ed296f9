"""The Mini-SegNet module (torch). Build it with :func:`edge_asc.model.build_model`; see
:mod:`edge_asc.model.config` for the layer table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MiniSegNetConfig
from .layers import EventExtraction, SamePadConv2d, make_norm, mask_unpool, upsample_to


class _ConvNormReLU(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], norm: nn.Module,
                 bound: float | None = None) -> None:
        super().__init__()
        self.conv = SamePadConv2d(c_in, c_out, kernel)
        self.norm = norm
        # a bound of 6 exports as RELU6, fused into the int8 CONV_2D / ADD in front of it (TFLite has no fused
        # activation for other bounds)
        self.act = nn.ReLU() if bound is None else nn.Hardtanh(0.0, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class MiniSegNet(nn.Module):
    """Mini-SegNet: input float32[N, in_channels, n_mels, T] normalised features -> logits float32[N, n_classes].

    T may differ from ``config.n_frames`` (the network is fully convolutional up to the global pooling), but the
    exported model uses ``n_frames``.
    """

    def __init__(self, config: MiniSegNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c1, c2 = cfg.channels
        k = cfg.kernel
        b = cfg.act_bound

        def outer_norm() -> nn.Module:  # the norm of the first and last convolution (MixupNorm in the presets)
            return make_norm(cfg.norm, c1, cfg.mixup_lambda, cfg.norm_stat, cfg.int8_native)

        self.enc1 = _ConvNormReLU(cfg.in_channels, c1, k, outer_norm(), b)
        self.enc2a = _ConvNormReLU(c1, c2, k, nn.BatchNorm2d(c2), b)
        self.enc2b = _ConvNormReLU(c2, c2, k, nn.BatchNorm2d(c2), b)
        self.dec1a = _ConvNormReLU(c2, c2, k, nn.BatchNorm2d(c2), b)
        self.dec1b = _ConvNormReLU(c2, c1, k, nn.BatchNorm2d(c1), b)
        self.dec2 = _ConvNormReLU(c1, c1, k, outer_norm(), b)
        self.events = EventExtraction(c1, cfg.topk, cfg.int8_native) if cfg.head == "events" else None
        u1, u2 = cfg.dense_units
        self.fc1 = nn.Linear(cfg.head_features, u1)
        self.fc2 = nn.Linear(u1, u2)
        self.out = nn.Linear(u2, cfg.n_classes)
        self.drop = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) normal initialisation for the ReLU convolutions and hidden dense layers, Glorot for the
        output layer, zero biases. (PyTorch's default uniform init leaves this 9-layer net on a long plateau.)"""
        for m in self.modules():
            if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m is not self.out):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=self.config.pool, stride=self.config.pool)

    def _unpool(self, values: torch.Tensor, pre: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if self.config.unpool in ("mask", "soft"):
            softness = self.config.unpool_softness if self.config.unpool == "soft" else None
            return mask_unpool(values, pre, pooled, self.config.pool, softness, self.config.int8_native)
        return upsample_to(values, self.config.pool, (pre.shape[2], pre.shape[3]))

    def _gap(self, d: torch.Tensor) -> torch.Tensor:
        """Global average pooling of float[N, C, H, W] -> [N, C] (gap_bands 1) or over time and ``gap_bands`` equal
        mel bands -> [N, C * gap_bands] (channel-major; the last ``H % gap_bands`` rows are left out).

        Written as MEAN over time, then an average pool of ``H // gap_bands`` rows over that [N, C, H, 1] tensor,
        not as one ``avg_pool2d`` over the decoder activation: TFLite's int8 AVERAGE_POOL_2D must have the same
        scale on input and output, and over the activation itself the converter tied the activation (float max 22
        on a demo model) to the range of the pooled features (max 2.05) and clipped it ten-fold, in front of the
        event block too. The MEAN requantises, and the row pool then ties only two small tensors of similar range.
        (A reshape + MEAN for the bands made onnx2tf transpose to NCHW and Vela refuse the depth reduction; a
        stride-8 depthwise convolution made Vela abort.)
        """
        b = self.config.gap_bands
        if b == 1:
            return d.mean(dim=(2, 3))
        h = d.shape[2] // b
        t = d.mean(dim=3, keepdim=True)  # [N, C, H, 1]
        if t.shape[2] != h * b:
            t = t[:, :, : h * b]
        return F.avg_pool2d(t, kernel_size=(h, 1), stride=(h, 1)).flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Head features float32[N, head_features] (GAP, plus event indices / C for the event head)."""
        pre1 = self.enc1(x)
        p1 = self._pool(pre1)
        pre2 = self.enc2b(self.enc2a(p1))
        p2 = self._pool(pre2)
        d = self._unpool(p2, pre2, p2)
        d = self.dec1b(self.dec1a(d))
        d = self._unpool(d, pre1, p1)
        d = self.dec2(d)
        g = self._gap(d)
        if self.events is not None:
            g = torch.cat([g, self.events(d)], dim=1)
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.embed(x)
        h = self.drop(F.relu(self.fc1(g)))
        h = self.drop(F.relu(self.fc2(h)))
        return self.out(h)
