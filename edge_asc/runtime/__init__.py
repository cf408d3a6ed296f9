"""Device runtime: LiteRT loading, the Classifier, the streaming pipeline, scene tracking, sources and sinks.

Device-safe: numpy, soundfile, soxr, sounddevice and a LiteRT interpreter only (sounddevice is imported lazily,
because importing it fails where PortAudio is missing).
"""

from ..frontend import WindowAssembler
from ..metrics import softmax
from .classifier import Classifier
from .interpreter import interpreter_backend, load_interpreter
from .pipeline import ClipResult, StreamPipeline, WindowResult, classify_audio, hop_frames_for
from .tracker import SceneChange, SceneTracker, top_k

__all__ = [
    "Classifier",
    "ClipResult",
    "SceneChange",
    "SceneTracker",
    "StreamPipeline",
    "WindowAssembler",
    "WindowResult",
    "classify_audio",
    "hop_frames_for",
    "interpreter_backend",
    "load_interpreter",
    "softmax",
    "top_k",
]
