"""Sliding-window perplexity (the Hugging Face / llama.cpp convention).

Windows of `window` tokens advance by `stride`; each window scores only the tokens not scored by
the previous one, with the rest as context. With window >= len(text) this is the plain
full-sequence perplexity. Models trained with a BOS token (Gemma) get one at each window start.
"""

from __future__ import annotations

import inspect
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


def with_bos(chunk: torch.Tensor, bos_id: int | None) -> torch.Tensor:
    """The window after the model's <bos>, for models whose tokenizer puts one before every text."""
    return chunk if bos_id is None else torch.cat([torch.tensor([bos_id], dtype=chunk.dtype), chunk])


def scored_logits(model: nn.Module, chunk: torch.Tensor, scored: int) -> torch.Tensor:
    """(scored, vocab) float32 logits predicting the last `scored` tokens of `chunk` (tokens,). Only
    those positions go through the output head where the model takes transformers'
    `logits_to_keep`: with Gemma-3's 262k vocabulary the head is most of a window's FLOPs, and a
    window scores half its positions."""
    keep = {"logits_to_keep": scored + 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    logits = model(chunk.unsqueeze(0), **keep).logits[0, :-1]  # position i predicts token i + 1
    return logits[-scored:].float()


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
            chunk = with_bos(ids[begin:end], bos_id)
            nll = nn.functional.cross_entropy(scored_logits(model, chunk, scored), chunk[-scored:], reduction="sum")
            total_nll += float(nll)
            count += scored
    mean = total_nll / count
    bpb = total_nll / math.log(2) / text_bytes if text_bytes else None
    return PerplexityResult(math.exp(mean), mean, count, bpb)


def chunked_perplexity(model: nn.Module, ids: torch.Tensor, ctx: int, chunks: int | None = None,
                       bos_id: int | None = None) -> PerplexityResult:
    """llama.cpp's `llama-perplexity` scheme, to compare with it on the same tokens: the text is cut
    into non-overlapping chunks of `ctx` tokens (the first replaced by BOS for models that add one),
    and each chunk scores only its second half, tokens ctx/2 + 1 .. ctx - 1."""
    ids = ids.reshape(-1)
    available = ids.numel() // ctx
    count = available if chunks is None else min(chunks, available)
    if count < 1:
        raise ValueError(f"the text has {ids.numel()} tokens: fewer than one chunk of {ctx}")
    first = ctx // 2
    total_nll, scored = 0.0, 0
    model.eval()
    with torch.no_grad():
        for index in range(count):
            chunk = ids[index * ctx:(index + 1) * ctx].clone()
            if bos_id is not None:
                chunk[0] = bos_id
            logits = scored_logits(model, chunk, ctx - 1 - first)
            nll = nn.functional.cross_entropy(logits, chunk[first + 1:], reduction="sum")
            total_nll += float(nll)
            scored += ctx - 1 - first
    mean = total_nll / scored
    return PerplexityResult(math.exp(mean), mean, scored, None)
