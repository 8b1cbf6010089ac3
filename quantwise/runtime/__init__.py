"""Quantized modules that run: packed weights, dequantized (or real kernels) at forward time."""

from .qlinear import QuantizedLinear

__all__ = ["QuantizedLinear"]
