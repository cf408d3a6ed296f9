"""Where training runs (``cpu``, ``cuda``, ``mps``) and in what precision (``fp32``, ``bf16``, ``fp16``).

Checkpoints never depend on either: :func:`edge_asc.train.checkpoint.save_checkpoint` writes CPU copies and loading
reads to the CPU, so a run trained on a GPU evaluates, exports and resumes on a CPU-only machine (and vice versa).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> str:
    """The torch device type for ``name``: ``auto`` is ``cuda`` if CUDA is available, else ``mps`` if available,
    else ``cpu``; an explicit name is returned when that device is available.

    Raises:
        ConfigError: an unknown name, or a device this machine's torch cannot use (the message names the fix).
    """
    import torch

    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available(torch) else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device 'cuda' is not available (torch {torch.__version__}, CUDA build: "
                          f"{torch.version.cuda or 'no'}): install a CUDA build of torch on a machine with an NVIDIA "
                          "GPU, or use --device cpu / auto")
    if name == "mps" and not _mps_available(torch):
        raise ConfigError("device 'mps' is not available (needs Apple silicon and a torch build with MPS): "
                          "use --device cpu / auto")
    return name


@dataclass(frozen=True, kw_only=True)
class Compute:
    """A resolved (device, precision) pair for the training loop."""

    device: str
    """torch device type: ``cpu``, ``cuda`` or ``mps``."""
    precision: str = "fp32"
    """``fp32`` (no autocast), ``bf16`` (autocast to bfloat16: CUDA or CPU) or ``fp16`` (autocast to float16 with a
    gradient scaler: CUDA only)."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device must be cpu, cuda or mps (resolve 'auto' first), got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "fp16" and self.device != "cuda":
            raise ConfigError(f"precision fp16 needs --device cuda (got {self.device}): use bf16 or fp32")
        if self.precision == "bf16" and self.device == "mps":
            raise ConfigError("precision bf16 is not supported on mps here: use fp32")

    @property
    def pin_memory(self) -> bool:
        """Whether host batches go through pinned memory (CUDA only)."""
        return self.device == "cuda"

    def autocast(self):
        """A context manager running the forward pass in this precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device, dtype=dtype)

    def grad_scaler(self):
        """A ``torch.amp.GradScaler`` for fp16, else None."""
        if self.precision != "fp16":
            return None
        import torch

        return torch.amp.GradScaler(self.device)

    def to_device(self, array):
        """A float32 numpy array as a tensor on this device (pinned + non-blocking copy on CUDA)."""
        import torch

        t = torch.from_numpy(array)
        if self.device == "cpu":
            return t
        if self.pin_memory:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=self.pin_memory)

    def describe(self) -> dict[str, str]:
        """What the checkpoint records (informational: resuming elsewhere is allowed)."""
        d = {"device": self.device, "precision": self.precision}
        if self.device == "cuda":
            import torch

            d["device_name"] = torch.cuda.get_device_name()
        return d
