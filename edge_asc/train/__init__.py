"""Training, checkpoints and evaluation of Mini-SegNet.

This package ``__init__`` imports nothing heavy: :mod:`edge_asc.frontend.windows` (window slicing, shared with
the export verifier and the runtime) is numpy-only; torch is imported by the modules that need it
(``loop``, ``checkpoint``, ``evaluate``, ``augment``).
"""
