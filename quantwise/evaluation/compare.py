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

from .perplexity import scored_logits, window_spans, with_bos

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
        return torch.log_softmax(scored_logits(model, chunk, scored), dim=-1)  # (scored, vocab)


def reference_cache_key(reference_weights: str, ids: torch.Tensor, window: int, stride: int, bos_id) -> str:
    """What the cached log-probabilities depend on: the reference's weights (their hash, not
    their name), the scored tokens, window, stride and BOS."""
    digest = hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]
    return f"weights={reference_weights}|tokens={digest}|window={window}|stride={stride}|bos={bos_id}"


def compare_models(reference: nn.Module | None, candidates: dict[str, nn.Module], ids: torch.Tensor,
                   window: int = 1024, stride: int = 512, bos_id: int | None = None,
                   text_bytes: int | None = None, reference_name: str = "reference",
                   cache_file: Path | None = None, cache_key: str | None = None,
                   progress=None) -> list[QualityRow]:
    """Rows for the reference (KL 0, agreement 1) and every candidate. With `cache_file`, the
    reference's log-probabilities are stored (fp32) under `cache_key` (`reference_cache_key`) and
    reused by later calls with the same key, so a sweep computes them once; `reference` may then
    be None."""
    spans = window_spans(ids.numel(), window, stride)
    key = cache_key or reference_cache_key(reference_name, ids, window, stride, bos_id)
    cached = read_reference_cache(cache_file, key) if cache_file else None
    if cached is None and reference is None:
        raise ValueError("no reference model and no matching reference cache")
    stats = {reference_name: _Accumulator(), **{name: _Accumulator() for name in candidates}}
    to_cache = {}
    for number, (begin, end, scored) in enumerate(spans):
        chunk = with_bos(ids[begin:end], bos_id)
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
        if progress:
            progress(number + 1, len(spans), f"window {number + 1} of {len(spans)}")
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


def reference_cache_status(path: Path, key: str) -> tuple[bool, str | None]:
    """(usable, why not) for the cache at `path` from its header alone: absent, made for other
    weights, text or window, or damaged (then it is recomputed and overwritten)."""
    if not path or not Path(path).exists():
        return False, None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("key")
    except (SafetensorError, OSError) as exc:
        return False, f"reference cache {path} is damaged ({exc}); discarding it"
    if stored != key:
        return False, f"reference cache {path} was made for {_differs(stored, key)}"
    return True, None


def read_reference_cache(path: Path, key: str) -> dict | None:
    usable, _ = reference_cache_status(path, key)
    if not usable:
        return None
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError):
        return None


def _differs(stored: str | None, wanted: str) -> str:
    if not stored:
        return "something else (no key)"
    old = dict(part.split("=", 1) for part in stored.split("|") if "=" in part)
    new = dict(part.split("=", 1) for part in wanted.split("|") if "=" in part)
    changed = [name for name in new if old.get(name) != new[name]]
    return f"other {', '.join(changed) or 'inputs'}"


def _write_cache(path: Path, key: str, tensors: dict) -> None:
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size > MAX_CACHE_BYTES:
        raise ValueError(f"the reference cache would take {size / 2**30:.1f} GiB; evaluate fewer tokens")
    from ..checkpoint.atomic import atomic_save_tensors

    atomic_save_tensors(tensors, path, metadata={"key": key})
