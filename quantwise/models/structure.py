"""Where smoothing scales can fold, per architecture: a producer (norm or linear) and the linears
that consume its output. Paths are relative to one decoder block."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SmoothGroup:
    producer: str
    consumers: tuple[str, ...]

    @property
    def producer_is_norm(self) -> bool:
        return "norm" in self.producer


_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_MLP_IN = ("mlp.gate_proj", "mlp.up_proj")
_LLAMA = (SmoothGroup("input_layernorm", _ATTN), SmoothGroup("post_attention_layernorm", _MLP_IN),
          SmoothGroup("self_attn.v_proj", ("self_attn.o_proj",)), SmoothGroup("mlp.up_proj", ("mlp.down_proj",)))
# Gemma 2/3 normalise again after attention; the MLP's input norm is pre_feedforward_layernorm.
_GEMMA2 = (SmoothGroup("input_layernorm", _ATTN), SmoothGroup("pre_feedforward_layernorm", _MLP_IN),
           SmoothGroup("self_attn.v_proj", ("self_attn.o_proj",)), SmoothGroup("mlp.up_proj", ("mlp.down_proj",)))

SMOOTH_GROUPS: dict[str, tuple[SmoothGroup, ...]] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gemma": _LLAMA,
    "gemma2": _GEMMA2, "gemma3": _GEMMA2, "gemma3_text": _GEMMA2,
}


def smooth_groups(model_type: str) -> tuple[SmoothGroup, ...]:
    if model_type not in SMOOTH_GROUPS:
        raise ValueError(f"smoothing (AWQ, SmoothQuant) does not know where to fold scales in {model_type!r} "
                         f"blocks; supported: {', '.join(SMOOTH_GROUPS)}")
    return SMOOTH_GROUPS[model_type]


def fold_into_producer(producer: nn.Module, scales: torch.Tensor) -> None:
    """Divide the producer's output channels by `scales` (in place)."""
    with torch.no_grad():
        if isinstance(producer, nn.Linear):
            producer.weight.div_(scales.unsqueeze(1).to(producer.weight.dtype))
            if producer.bias is not None:
                producer.bias.div_(scales.to(producer.bias.dtype))
        elif type(producer).__name__.startswith("Gemma"):
            # Gemma RMSNorm multiplies by (1 + weight)
            producer.weight.copy_((1.0 + producer.weight.float()) / scales - 1.0)
        else:
            producer.weight.div_(scales.to(producer.weight.dtype))
            if getattr(producer, "bias", None) is not None:
                producer.bias.div_(scales.to(producer.bias.dtype))


def scale_consumer(consumer: nn.Linear, scales: torch.Tensor) -> None:
    with torch.no_grad():
        consumer.weight.mul_(scales.unsqueeze(0).to(consumer.weight.dtype))
