"""Text is read as the text it is: strict UTF-8, byte-order marks honoured, binary refused,
--encoding for the rest, and a warning for text that is not language."""

from __future__ import annotations

import json
import os

import pytest
from cli_checks import one_line_error, run
from tiny_models import TEXT

from quantwise.calibration.decoding import language_likeness, read_text_file


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_byte_order_marks_decide(tmp_path, encoding):
    path = tmp_path / "t.txt"
    path.write_text("naïve café — 東京", encoding=encoding)
    assert read_text_file(path) == "naïve café — 東京"


def _scores(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["quality"][0]["perplexity"]


def test_utf16_evaluation_text_scores_like_utf8(tiny_llama, tmp_path):
    utf8, utf16 = tmp_path / "a.txt", tmp_path / "b.txt"
    utf8.write_text(TEXT, encoding="utf-8")
    utf16.write_text(TEXT, encoding="utf-16")
    common = ("--max-tokens", 200, "--window", 64, "--stride", 32, "--json")
    assert _scores(run("eval", tiny_llama, "--text", utf16, *common)) == _scores(run("eval", tiny_llama, "--text",
                                                                                      utf8, *common))


def test_latin1_needs_its_encoding(tiny_llama, tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(TEXT.replace("a", "à").encode("latin-1"))
    one_line_error(run("eval", tiny_llama, "--text", path, "--max-tokens", 64), "latin.txt", "not valid utf-8",
                   "--encoding")
    assert run("eval", tiny_llama, "--text", path, "--max-tokens", 64, "--encoding", "latin-1").exit_code == 0


def test_random_bytes_are_refused_as_calibration(tiny_llama, tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(os.urandom(200_000))
    one_line_error(run("quantize", tiny_llama, "--method", "rtn", "--format", "int8", "--calib", path,
                       "--out", tmp_path / "out"), "noise.txt", "binary")
    assert not (tmp_path / "out" / "quantwise.json").exists()


def test_text_unlike_language_is_warned_about(tiny_llama, tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_text(" ".join(str(n * 7919 % 10007) for n in range(20000)))
    result = run("quantize", tiny_llama, "--method", "rtn", "--format", "int8", "--calib", path, "--samples", 2,
                 "--seq-len", 32, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "numbers.txt" in result.stderr and "natural-language" in result.stderr


def test_likeness_separates_prose_from_data():
    assert language_likeness(TEXT) > 0.9
    assert language_likeness("0.125,3.5,7e-3\n" * 100) < 0.2
