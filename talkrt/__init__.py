"""talkrt: talking-head models from PyTorch to ONNX to TensorRT, run as one zero-copy GPU pipeline.

Importing the package is cheap and CPU-safe: torch, onnx and the optional GPU
backends are imported only by the modules that need them.
"""

__version__ = "0.1.0"
