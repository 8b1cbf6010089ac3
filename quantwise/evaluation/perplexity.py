"""Sliding-window perplexity (the Hugging Face / llama.cpp convention).

Windows of `window` tokens advance by `stride`; each window scores only the tokens not scored by
the previous one, with the rest as context. With window >= len(text) this is the plain
full-sequence perplexity. Models trained with a BOS token (Gemma) get one at each window start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float          # nats per scored token
    scored_tokens: int
    bits_per_byte: float | None


def window_spans(total: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window: tokens [begin, end) with the last `scored` ones scored."""
    if window < 2 or stride < 1 or stride > window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    spans, scored_until = [], 1  # the first token has no context and is never scored
    for begin in range(0, total, stride):
        end = min(begin + window, total)
        if end <= scored_until:
            break
        spans.append((begin, end, end - scored_until))
        scored_until = end
        if end == total:
            break
    return spans


def perplexity(model: nn.Module, ids: torch.Tensor, window: int = 1024, stride: int = 512,
               bos_id: int | None = None, text_bytes: int | None = None) -> PerplexityResult:
    """ids: (tokens,) int64 of the evaluation text; text_bytes: its UTF-8 size, for bits per byte."""
    ids = ids.reshape(-1)
    if ids.numel() < 2:
        raise ValueError("evaluation text needs at least 2 tokens")
    total_nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for begin, end, scored in window_spans(ids.numel(), window, stride):
            chunk = ids[begin:end]
            if bos_id is not None:
                chunk = torch.cat([torch.tensor([bos_id]), chunk])
            logits = model(chunk.unsqueeze(0)).logits[0, :-1].float()  # predicts chunk[1:]
            targets = chunk[1:]
            nll = nn.functional.cross_entropy(logits[-scored:], targets[-scored:], reduction="sum")
            total_nll += float(nll)
            count += scored
    mean = total_nll / count
    bpb = total_nll / math.log(2) / text_bytes if text_bytes else None
    return PerplexityResult(math.exp(mean), mean, count, bpb)
