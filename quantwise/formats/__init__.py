"""Number formats: specs, packed containers, quantize/dequantize, error metrics."""

from .api import dequantize, fake_quantize, quantize
from .container import DoubleQuantScales, QuantizedTensor
from .metrics import ErrorMetrics, error_metrics, sqnr_db
from .nf4 import NF4_CODEBOOK
from .spec import FormatKind, Granularity, QuantSpec, parse_spec

__all__ = ["quantize", "dequantize", "fake_quantize", "QuantizedTensor", "DoubleQuantScales",
           "ErrorMetrics", "error_metrics", "sqnr_db", "NF4_CODEBOOK", "FormatKind", "Granularity",
           "QuantSpec", "parse_spec"]
