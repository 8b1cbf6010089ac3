"""Number formats: specs, packed containers, quantize/dequantize, error metrics.

Specs and storage sizes import without torch (the planner needs them in well under a second);
the torch-backed names load on first use.
"""

from importlib import import_module

from .spec import FormatKind, Granularity, QuantSpec, parse_spec
from .storage import bits_per_weight, storage_bytes

_LAZY = {
    "quantize": ".api", "dequantize": ".api", "fake_quantize": ".api",
    "QuantizedTensor": ".container", "DoubleQuantScales": ".container",
    "ErrorMetrics": ".metrics", "error_metrics": ".metrics", "sqnr_db": ".metrics",
    "NF4_CODEBOOK": ".nf4",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FormatKind", "Granularity", "QuantSpec", "parse_spec", "bits_per_weight", "storage_bytes",
           *_LAZY]
