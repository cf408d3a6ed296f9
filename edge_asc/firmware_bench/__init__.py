"""Reports read off a ``.tflite`` artifact: parameters, non-zero parameters, per-layer MACs, activation memory, the
TFLite Micro arena, Vela (Ethos-U) figures, deployment targets and DCASE budget verdicts; plus the budget-driven
Mini-SegNet search of ``edge-asc fit``.

Modules: :mod:`.graph` (FlatBuffer walker), :mod:`.budgets` (DCASE constants), :mod:`.tflm`, :mod:`.vela`,
:mod:`.targets` (``targets.toml`` + host timing), :mod:`.report` (the :class:`~.report.Report` dataclass),
:mod:`.render` (terminal / Markdown / PNG), :mod:`.fit`. Importing this package imports nothing heavy.
"""
