"""quantwise: which precision, which quantization method, on which GPUs - and the quantized model."""

__version__ = "0.1.0"


def load(checkpoint):
    """Load a quantwise checkpoint as a runnable model (see quantwise.runtime.load)."""
    from .runtime.load import load as _load

    return _load(checkpoint)
