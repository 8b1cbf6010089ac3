"""quantwise: which precision, which quantization method, on which GPUs - and the quantized model."""

__version__ = "0.1.0"
