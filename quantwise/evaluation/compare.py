"""Quality of quantized models against their reference, window by window in lockstep:
perplexity, bits per byte, KL divergence of the next-token distributions and top-1 agreement
(the statistics llama.cpp's perplexity tool reports with --kl-divergence)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .perplexity import window_spans

MAX_CACHE_BYTES = 4 * 2**30


@dataclass
class QualityRow:
    name: str
    perplexity: float
    bits_per_byte: float | None
    kl_mean: float            # nats per token, KL(reference || model)
    kl_p99: float
    top1_agreement: float     # fraction of tokens whose argmax matches the reference's
    scored_tokens: int


@dataclass
class _Accumulator:
    nll: float = 0.0
    tokens: int = 0
    agree: int = 0
    kls: list | None = None

    def __post_init__(self):
        self.kls = []


def _log_probs(model: nn.Module, chunk: torch.Tensor, scored: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(chunk.unsqueeze(0)).logits[0, :-1].float()
    return torch.log_softmax(logits[-scored:], dim=-1)  # (scored, vocab)


def _cache_key(reference_name: str, ids: torch.Tensor, window: int, stride: int, bos_id) -> str:
    digest = hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]
    return f"{reference_name}|{digest}|{window}|{stride}|{bos_id}"


def compare_models(reference: nn.Module | None, candidates: dict[str, nn.Module], ids: torch.Tensor,
                   window: int = 1024, stride: int = 512, bos_id: int | None = None,
                   text_bytes: int | None = None, reference_name: str = "reference",
                   cache_file: Path | None = None) -> list[QualityRow]:
    """Rows for the reference (KL 0, agreement 1) and every candidate. With `cache_file`, the
    reference's log-probabilities are stored (fp32) and reused by later calls with the same text,
    window and stride, so a sweep computes them once; `reference` may then be None."""
    spans = window_spans(ids.numel(), window, stride)
    key = _cache_key(reference_name, ids, window, stride, bos_id)
    cached = _read_cache(cache_file, key) if cache_file else None
    if cached is None and reference is None:
        raise ValueError("no reference model and no matching reference cache")
    stats = {reference_name: _Accumulator(), **{name: _Accumulator() for name in candidates}}
    to_cache = {}
    for number, (begin, end, scored) in enumerate(spans):
        chunk = ids[begin:end]
        if bos_id is not None:
            chunk = torch.cat([torch.tensor([bos_id]), chunk])
        targets = chunk[1:][-scored:]
        if cached is not None:
            ref_lp = cached[f"w{number}"].float()
        else:
            ref_lp = _log_probs(reference, chunk, scored)
            if cache_file:
                to_cache[f"w{number}"] = ref_lp  # fp32: fp16 rounding visibly shifts small KLs
        ref_top = ref_lp.argmax(-1)
        _update(stats[reference_name], ref_lp, ref_lp, ref_top, targets)
        for name, model in candidates.items():
            _update(stats[name], _log_probs(model, chunk, scored), ref_lp, ref_top, targets)
    if to_cache:
        _write_cache(cache_file, key, to_cache)
    rows = []
    for name, acc in stats.items():
        kl = torch.cat(acc.kls)
        rows.append(QualityRow(name, math.exp(acc.nll / acc.tokens),
                               acc.nll / math.log(2) / text_bytes if text_bytes else None,
                               float(kl.mean()), float(torch.quantile(kl, 0.99)), acc.agree / acc.tokens,
                               acc.tokens))
    return rows


def _update(acc: _Accumulator, log_probs: torch.Tensor, ref_lp: torch.Tensor, ref_top: torch.Tensor,
            targets: torch.Tensor) -> None:
    acc.nll += float(-log_probs.gather(1, targets.unsqueeze(1)).sum())
    acc.tokens += targets.numel()
    acc.agree += int((log_probs.argmax(-1) == ref_top).sum())
    kl = (ref_lp.exp() * (ref_lp - log_probs)).sum(-1).clamp(min=0)  # (scored,)
    acc.kls.append(kl)


def _read_cache(path: Path, key: str) -> dict | None:
    if not path or not Path(path).exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("key") != key:
            return None
    return load_file(str(path))


def _write_cache(path: Path, key: str, tensors: dict) -> None:
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > MAX_CACHE_BYTES:
        raise ValueError(f"the reference cache would take {size / 2**30:.1f} GiB; evaluate fewer tokens")
    from ..checkpoint.atomic import atomic_save_tensors

    atomic_save_tensors(tensors, path, metadata={"key": key})
