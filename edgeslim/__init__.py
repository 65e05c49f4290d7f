"""edgeslim: pretrained Transformer -> small, fast, verified ONNX artifact."""

__version__ = "0.1.0"
