import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from quantwise.evaluation.perplexity import perplexity, window_spans

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "m", layers=1))


def full_sequence_ppl(model, ids):
    with torch.no_grad():
        out = model(ids.unsqueeze(0), labels=ids.unsqueeze(0))
    return math.exp(float(out.loss))


def test_sliding_equals_full_sequence_when_the_window_covers_the_text(model):
    ids = torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(0))
    assert perplexity(model, ids, window=128, stride=64).perplexity == pytest.approx(full_sequence_ppl(model, ids),
                                                                                  rel=1e-5)


def test_every_token_but_the_first_is_scored_once():
    for total, window, stride in [(100, 32, 16), (100, 32, 32), (33, 32, 7), (5, 8, 8)]:
        spans = window_spans(total, window, stride)
        assert sum(s for _, _, s in spans) == total - 1
        assert all(end - begin <= window and scored <= end - begin for begin, end, scored in spans)


def test_shorter_windows_lose_context(model):
    ids = torch.randint(0, 256, (120,), generator=torch.Generator().manual_seed(1))
    result = perplexity(model, ids, window=16, stride=8)
    assert result.scored_tokens == 119 and result.perplexity > 1


def test_bad_windows():
    with pytest.raises(ValueError):
        window_spans(10, 8, 9)
    with pytest.raises(ValueError):
        window_spans(10, 1, 1)


def test_only_the_scored_positions_go_through_the_output_head(model):
    from quantwise.evaluation.perplexity import scored_logits

    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(2))
    rows = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            full = model(ids.unsqueeze(0)).logits[0, :-1]
            kept = scored_logits(model, ids, 12)
    finally:
        hook.remove()
    assert rows == [40, 13]  # the full pass, then the 12 scored predictions and the last position
    assert torch.allclose(kept, full[-12:], atol=1e-5, rtol=1e-5)
