"""Typed errors of edge-asc.

Every anticipated failure is an :class:`EdgeAscError` whose message is one line that names the problem and the
fix. Only :mod:`edge_asc.cli` turns them into exit codes; library code raises and never prints or exits.
"""

from __future__ import annotations


class EdgeAscError(Exception):
    """Base class of every anticipated edge-asc failure. ``exit_code`` is what the CLI returns for it."""

    exit_code: int = 1


class UsageError(EdgeAscError):
    """The command line itself is wrong (an option out of range, a missing argument)."""

    exit_code = 2


class ConfigError(EdgeAscError):
    """A configuration (FrontendSpec, model config, export config...) is invalid or inconsistent."""


class AudioInputError(EdgeAscError):
    """Audio cannot be used: missing, unreadable, corrupt, empty, non-finite, wrong shape or sample rate."""


class DatasetError(EdgeAscError):
    """A dataset folder does not have the expected layout or content."""


class ModelContractError(EdgeAscError):
    """A model file or checkpoint is missing, corrupt, or does not match what the caller expects."""


class ExportError(EdgeAscError):
    """A conversion step (ONNX, onnx2tf, TFLite) failed or its output did not verify."""


class ExportGateError(ExportError):
    """The exported model verified but failed the export gate (:mod:`edge_asc.export.gate`). The model and its
    report were written and are kept; ``result`` is the :class:`edge_asc.export.ExportResult` (None if unknown)."""

    def __init__(self, message: str, *, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class DeviceError(EdgeAscError):
    """An audio device or accelerator is absent, busy, or disappeared."""


class BudgetExceededError(EdgeAscError):
    """A ``--require``d budget is not met (the report command maps this to exit code 3)."""

    exit_code = 3


class MissingExtraError(EdgeAscError):
    """An optional dependency is not installed; the message carries the pip command that installs it."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"Python package '{module}' is not installed{what}: run pip install 'edge-asc[{extra}]'"
        )


def require(module: str, extra: str, purpose: str = ""):
    """Import and return ``module``, raising :class:`MissingExtraError` with the install hint if it is absent."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through tests that hide modules
        raise MissingExtraError(module, extra, purpose) from exc
