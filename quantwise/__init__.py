"""quantwise: which precision, which quantization method, on which GPUs - and the quantized model."""

__version__ = "0.1.0"


def load(checkpoint, kernels: bool = True, dtype=None):
    """Load a quantwise checkpoint as a runnable model on its packed low-bit kernels
    (`kernels=False`: dequantized float32 copies, for debugging). See quantwise.checkpoint.load."""
    from .checkpoint import load as _load

    return _load(checkpoint, kernels=kernels, dtype=dtype)
