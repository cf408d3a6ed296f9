"""edge-asc: acoustic scene classification from training to a microphone on a small device.

The top-level package imports nothing heavy: ``spec``, ``audio``, ``frontend`` and ``runtime`` are device-safe
(numpy, soundfile, soxr, sounddevice, LiteRT); training and export live in their own subpackages.
"""

__version__ = "0.1.0"
