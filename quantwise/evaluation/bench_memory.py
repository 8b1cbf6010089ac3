"""How much memory a `bench` run needs, from the model's shapes, checked before any work.

`bench --batch 100000` used to grow past 17 GB and be killed (or segfault) minutes in; the
logits alone of a 128-token prefill at that batch are terabytes. The estimate is deliberately
simple and on the high side: the largest terms (weights, KV cache, logits) are exact for
Llama-like models, activations are a few hidden-sized tensors per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import QuantwiseError

GIB = 2**30
MAX_BATCH = 65536  # beyond any CPU or single-GPU decode batch; catches typos before the estimate


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None = None


@dataclass(frozen=True)
class BenchMemory:
    """Estimated peak bytes of one bench row, by part."""

    weights: int       # the fp32 load plus the copy a format makes of it
    kv_cache: int      # keys and values for batch x (prompt + steps)
    logits: int        # batch x tokens x vocab of the largest forward
    activations: int   # hidden states, MLP intermediates and attention scores of that forward

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.logits + self.activations


def shape_of(config, params: int) -> ModelShape:
    """ModelShape from a transformers config (its text part for multimodal models)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(params, text.num_hidden_layers, text.hidden_size,
                      getattr(text, "intermediate_size", 4 * text.hidden_size), heads,
                      getattr(text, "num_key_value_heads", None) or heads, head_dim, text.vocab_size,
                      getattr(text, "max_position_embeddings", None))


def bench_memory(shape: ModelShape, batch: int, prompt: int, steps: int, prefill: int,
                 act_bytes: int) -> BenchMemory:
    """Peak bytes of a row: weights, then whichever forward is larger, the prompt's before decode
    (with the KV cache it fills) or the prefill timing's (no cache). act_bytes: 4 fp32, 2 bf16."""
    weights = shape.params * 4 + (shape.params * act_bytes if act_bytes != 4 else 0)
    kv = 2 * shape.layers * batch * (prompt + steps + 2) * shape.kv_heads * shape.head_dim * act_bytes

    def forward(tokens: int) -> tuple[int, int]:  # (logits, activations) of one forward
        logits = batch * tokens * shape.vocab * (act_bytes + 4)  # and their float32 copy
        hidden = batch * tokens * (4 * shape.hidden + 3 * shape.intermediate) * act_bytes
        scores = batch * shape.heads * tokens * tokens * 4  # attention scores, softmax in fp32
        return logits, hidden + scores

    decode, timing = forward(prompt), forward(prefill)
    if sum(decode) + kv >= sum(timing):
        return BenchMemory(weights, kv, *decode)
    return BenchMemory(weights, 0, *timing)


def check_bench_memory(estimate: BenchMemory, available: int | None, what: str) -> None:
    """Refuse a run whose estimate exceeds the memory available, with both figures in one line."""
    if available is None or estimate.total <= available:
        return
    raise QuantwiseError(
        f"bench {what} would need about {estimate.total / GIB:,.1f} GiB (weights {estimate.weights / GIB:,.1f}, "
        f"KV cache {estimate.kv_cache / GIB:,.1f}, logits {estimate.logits / GIB:,.1f}, activations "
        f"{estimate.activations / GIB:,.1f}) but only {available / GIB:,.1f} GiB is available (MemAvailable); "
        "lower --batch, --prompt or --steps")


def check_bench_lengths(shape: ModelShape, prompt: int, steps: int, prefill: int) -> None:
    """Positions beyond the model's window are refused, not run into undefined rotary positions."""
    longest = max(prompt + steps + 2, prefill)
    if shape.max_positions and longest > shape.max_positions:
        raise QuantwiseError(f"--prompt {prompt} + --steps {steps} (+2 warm-up) and the {prefill}-token prefill "
                             f"need {longest} positions; this model has {shape.max_positions}")
