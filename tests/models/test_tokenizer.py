"""The model's tokenizer as calibration and evaluation read it: the same ids as transformers'
AutoTokenizer, and the token it prepends (Gemma's <bos>) found from the tokenizer's own behaviour."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from quantwise.calibration import token_samples
from quantwise.cli.eval_cmd import eval_tokens
from quantwise.models.tokenizer import byte_level_tokenizer, load_text_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import TEXT, write_text  # noqa: E402


def _save(path: Path, prepend_bos: bool) -> Path:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = byte_level_tokenizer()
    core = tokenizer.backend_tokenizer
    core.add_special_tokens(["<bos>"])
    bos = core.token_to_id("<bos>")
    if prepend_bos:  # what Gemma's tokenizer.json says: <bos> before every text
        core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>").save_pretrained(path)
    return path


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_ids_match_autotokenizer_and_the_prepended_token_is_found(tmp_path, prepend_bos):
    from transformers import AutoTokenizer

    folder = _save(tmp_path / "tok", prepend_bos)
    ours = load_text_tokenizer(folder)
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert ours.encode(TEXT) == auto(TEXT, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(TEXT)) == TEXT
    expected = auto.convert_tokens_to_ids("<bos>") if prepend_bos else None
    assert ours.bos_id == expected
    if prepend_bos:
        assert auto(TEXT)["input_ids"][0] == expected


def test_calibration_windows_and_evaluation_start_with_the_prepended_token(tmp_path):
    folder = _save(tmp_path / "tok", prepend_bos=True)
    tokenizer = load_text_tokenizer(folder)
    windows = token_samples(tokenizer, [TEXT], samples=4, seq_len=32, seed=0)
    assert torch.equal(windows[:, 0], torch.full((4,), tokenizer.bos_id))
    assert not (windows[:, 1:] == tokenizer.bos_id).any()  # only where it was put: the text has none
    ids, bos, text_bytes = eval_tokens(folder, str(write_text(tmp_path / "t.txt")), max_tokens=100)
    assert bos == tokenizer.bos_id and ids.tolist() == tokenizer.encode(TEXT)[:100]
    assert text_bytes == len(TEXT.encode()[:100])  # byte-level: one token per byte


def test_cached_ids_need_no_tokenizer_and_follow_the_tokenizer_files(tmp_path):
    folder = _save(tmp_path / "tok", prepend_bos=True)
    cache = tmp_path / "cache"
    first = load_text_tokenizer(folder, cache)
    ids, bos = first.ids(TEXT), first.bos_id
    assert ids.tolist() == load_text_tokenizer(folder, cache=False).encode(TEXT)

    again = load_text_tokenizer(folder, cache)
    assert torch.equal(again.ids(TEXT), ids) and again.bos_id == bos
    assert "_backend" not in again.__dict__  # served from the cache: the tokenizer was never loaded
    assert load_text_tokenizer(folder, cache).ids(TEXT + "!").numel() == ids.numel() + 1  # another text

    # another tokenizer in the same folder (no <bos>, one more token) must not get the old ids
    other = _save(folder, prepend_bos=False)
    from tokenizers import Tokenizer

    core = Tokenizer.from_file(str(other / "tokenizer.json"))
    core.add_tokens(["truth"])  # one token where there were five
    core.save(str(other / "tokenizer.json"))
    changed = load_text_tokenizer(other, cache)
    assert changed.bos_id is None
    assert changed.ids(TEXT).tolist() == load_text_tokenizer(other, cache=False).encode(TEXT) != ids.tolist()


def test_a_damaged_token_cache_is_tokenized_again_with_a_warning(tmp_path):
    folder = _save(tmp_path / "tok", prepend_bos=False)
    cache = tmp_path / "cache"
    expected = load_text_tokenizer(folder, cache).ids(TEXT)
    (stored,) = cache.glob("*/*.npy")
    stored.write_bytes(stored.read_bytes()[:40])
    with pytest.warns(UserWarning, match="damaged"):
        assert torch.equal(load_text_tokenizer(folder, cache).ids(TEXT), expected)
    assert torch.equal(load_text_tokenizer(folder, cache).ids(TEXT), expected)  # and rewritten
