"""A linear layer whose weight is a QuantizedTensor, optionally with quantized activations.

Forward computes in float32 from the dequantized weight (cached): numerically what a W4A16 /
W8A8 kernel computes, used for accuracy. Fast packed kernels are a separate concern.
"""

from __future__ import annotations

import torch
from torch import nn

from ..formats import QuantSpec, parse_spec
from ..formats.api import fake_quantize
from ..formats.container import QuantizedTensor

PER_TOKEN_INT8 = parse_spec("int8-token")


def quantize_activations(x: torch.Tensor, spec: QuantSpec, outlier_threshold: float | None) -> torch.Tensor:
    """Dynamic activation quantization (per token); with a threshold, LLM.int8()'s decomposition:
    input columns holding any |x| > threshold stay in 16-bit, the rest are quantized."""
    x2d = x.reshape(-1, x.shape[-1])
    if outlier_threshold is None:
        return fake_quantize(x2d.float(), spec).reshape(x.shape).to(x.dtype)
    outliers = (x2d.abs() > outlier_threshold).any(0)  # (in_features,)
    regular = x2d.masked_fill(outliers, 0.0)
    mixed = fake_quantize(regular.float(), spec).to(x.dtype)
    mixed[:, outliers] = x2d[:, outliers]
    return mixed.reshape(x.shape)


class QuantizedLinear(nn.Module):
    """y = act_q(x)[..., perm] @ dequant(W)^T + b.

    weight: packed weights in stored column order; perm: stored column j holds input feature
    perm[j] (GPTQ act-order), None for natural order; act_spec: dynamic activation format (W8A8),
    None for weight-only; outlier_threshold: LLM.int8() columns kept in 16-bit.
    """

    def __init__(self, weight: QuantizedTensor, bias: torch.Tensor | None = None, perm: torch.Tensor | None = None,
                 act_spec: QuantSpec | None = None, outlier_threshold: float | None = None):
        super().__init__()
        self.weight_q = weight
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("perm", None if perm is None else perm.to(torch.int64))
        self.act_spec = act_spec
        self.outlier_threshold = outlier_threshold
        self._dense: torch.Tensor | None = None
        self._cast: torch.Tensor | None = None

    def dense_weight(self) -> torch.Tensor:
        """Dequantized weight in the natural input order, (out_features, in_features) float32."""
        if self._dense is None:
            w = self.weight_q.dequantize()
            if self.perm is not None:
                w = w[:, torch.argsort(self.perm)]
            self._dense = w
        return self._dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_spec is not None:
            x = quantize_activations(x, self.act_spec, self.outlier_threshold)
        cast = self._cast
        if cast is not None and cast.device == x.device and cast.dtype == x.dtype:
            w = cast
        else:
            w = self.dense_weight()
            if w.device != x.device or w.dtype != x.dtype:
                # one copy where the inputs are, in their dtype (casting on every call made bf16 runs
                # slower than fp32); the fp32 copy is dropped, the packed weights can give it again
                self._cast = w = w.to(device=x.device, dtype=x.dtype)
                self._dense = None
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, w, bias)

    def extra_repr(self) -> str:
        act = self.act_spec.name if self.act_spec else "fp"
        return (f"in={self.in_features}, out={self.out_features}, weight={self.weight_q.spec.name}, act={act}, "
                f"act_order={self.perm is not None}, outlier_threshold={self.outlier_threshold}")
