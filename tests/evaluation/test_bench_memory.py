"""bench's memory estimate and its refusal, from shapes alone."""

import pytest

from quantwise.errors import QuantwiseError
from quantwise.evaluation.bench_memory import (
    GIB,
    ModelShape,
    bench_memory,
    check_bench_lengths,
    check_bench_memory,
)

# SmolLM2-135M's shapes
SMOL = ModelShape(params=134_515_008, layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64,
                  vocab=49152, max_positions=8192)
TINY = ModelShape(params=100_000, layers=2, hidden=64, intermediate=96, heads=4, kv_heads=2, head_dim=16, vocab=256,
                  max_positions=256)


def test_estimate_parts_for_the_decode_forward():
    m = bench_memory(TINY, batch=3, prompt=4, steps=6, prefill=4, act_bytes=2)
    assert m.weights == 100_000 * (4 + 2)                        # fp32 load + bf16 copy
    assert m.kv_cache == 2 * 2 * 3 * (4 + 6 + 2) * 2 * 16 * 2      # k and v, layers, batch, positions, kv width
    assert m.logits == 3 * 4 * 256 * (2 + 4)
    assert m.total == m.weights + m.kv_cache + m.logits + m.activations
    fp32 = bench_memory(TINY, batch=3, prompt=4, steps=6, prefill=4, act_bytes=4)
    assert fp32.weights == 400_000 and fp32.kv_cache == 2 * m.kv_cache


def test_the_prefill_forward_dominates_a_large_batch():
    # the issue's --batch 100000: the 128-token prefill's logits alone are terabytes
    m = bench_memory(SMOL, batch=100_000, prompt=32, steps=16, prefill=128, act_bytes=2)
    assert m.kv_cache == 0 and m.logits == 100_000 * 128 * 49152 * 6
    assert m.total > 3_000 * GIB
    small = bench_memory(SMOL, batch=1, prompt=32, steps=16, prefill=128, act_bytes=4)
    assert small.total < 1 * GIB


def test_refusal_names_the_estimate_and_what_is_available():
    m = bench_memory(SMOL, batch=100_000, prompt=32, steps=16, prefill=128, act_bytes=2)
    with pytest.raises(QuantwiseError, match=r"would need about [\d,]+\.\d GiB .* only 21\.5 GiB is available"):
        check_bench_memory(m, int(21.5 * GIB), "--batch 100000")
    check_bench_memory(m, None, "--batch 100000")  # unknown availability: no guess, no refusal
    check_bench_memory(bench_memory(TINY, 1, 4, 4, 8, 4), GIB, "--batch 1")


def test_lengths_beyond_the_models_positions_are_refused():
    check_bench_lengths(TINY, prompt=32, steps=16, prefill=128)
    with pytest.raises(QuantwiseError, match="need 318 positions; this model has 256"):
        check_bench_lengths(TINY, prompt=300, steps=16, prefill=128)
    with pytest.raises(QuantwiseError, match="need 300 positions"):
        check_bench_lengths(TINY, prompt=8, steps=8, prefill=300)
