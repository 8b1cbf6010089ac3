"""GGUF K-quants (Q4_K, Q6_K) as codes: blocks read bit-exactly against gguf's own dequantizer,
written back byte for byte, quantized from floats no worse than RTN at the same group size, and a
GGUF -> quantwise -> GGUF round trip through a tiny model whose widths are multiples of 256."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantwise.checkpoint.exporters import ExportError, ExportOptions, export
from quantwise.checkpoint.exporters import gguf_kquants as K
from quantwise.checkpoint.importers import gguf as gguf_importer
from quantwise.formats import parse_spec, quantize

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
ROWS, COLS = 8, 512


def random_blocks(kind, rows=ROWS, cols=COLS, seed=0) -> np.ndarray:
    """Random bytes with finite fp16 super-block scales: every code, sub-scale and bit pattern occurs."""
    rng = np.random.default_rng(seed)
    size = gguf.GGML_QUANT_SIZES[kind][1]
    raw = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    d = (rng.random((raw.shape[0], 2)) * 1e-3).astype(np.float16).view(np.uint8)
    if kind == Q.Q6_K:
        raw[:, 208:210] = d[:, 0:2]
    else:
        raw[:, 0:4] = d
    return raw.reshape(-1)


def dequantized(raw, kind, rows=ROWS, cols=COLS):
    return gguf.quants.dequantize(raw, kind).reshape(rows, cols)


@pytest.mark.parametrize("kind,spec", [(Q.Q4_K, "affine4-g32"), (Q.Q6_K, "int6-g16")])
def test_blocks_import_as_codes_bit_exact_and_pack_back_to_the_same_bytes(kind, spec, monkeypatch):
    raw = random_blocks(kind)
    module = gguf_importer._linear(raw, kind, ROWS, COLS)
    assert module.weight_q.spec.name == spec and module.weight_q.spec.scale_dtype_name == "float32"
    assert np.array_equal(module.dense_weight().numpy(), dequantized(raw, kind))
    transcode = K.q4_k_transcode if kind == Q.Q4_K else K.q6_k_transcode
    # the same values back; bytes too unless d * sc = (-d) * (-sc) leaves Q6_K a choice (the real-file test)
    assert np.array_equal(dequantized(transcode(module).reshape(-1), kind), dequantized(raw, kind))
    # negative control: Q4_K's sub-blocks 4..7 read without the top bits of their 6-bit scales
    monkeypatch.setattr(K, "_unpack_6bit", lambda p: (np.concatenate([p[:, 0:4] & 63, p[:, 8:12] & 0xF], 1),
                                                      np.concatenate([p[:, 4:8] & 63, p[:, 8:12] >> 4], 1)))
    if kind == Q.Q4_K:
        wrong = gguf_importer._linear(raw, kind, ROWS, COLS).dense_weight().numpy()
        assert not np.array_equal(wrong, dequantized(raw, kind))


@pytest.mark.slow  # gguf's reader parses the 262k-token vocabulary: ~25 s
def test_llama_quantize_blocks_come_back_byte_for_byte():
    """Gemma-3-270M's Q4_K_M file (`quantwise data fetch`): its first Q4_K and Q6_K tensors."""
    from quantwise.cache import cache_dir

    path = cache_dir("gguf") / "gemma-3-270m-q4_k_m.gguf"
    if not path.is_file():
        pytest.skip("run `quantwise data fetch` for the Gemma-3 GGUF")
    tensors = gguf.GGUFReader(str(path)).tensors
    for kind in (Q.Q4_K, Q.Q6_K):
        tensor = next(t for t in tensors if t.tensor_type == kind)
        cols, rows = (int(v) for v in tensor.shape)
        raw = np.asarray(tensor.data).reshape(-1)
        module = gguf_importer._linear(raw, kind, rows, cols)
        assert np.array_equal(module.dense_weight().numpy(), dequantized(raw, kind, rows, cols))
        transcode = K.q4_k_transcode if kind == Q.Q4_K else K.q6_k_transcode
        assert np.array_equal(transcode(module).reshape(-1), raw)


def test_truncated_kquant_tensor_is_refused_in_one_line():
    raw = random_blocks(Q.Q6_K)[:-10]
    with pytest.raises(gguf_importer.ImportError_, match="truncated or damaged"):
        gguf_importer._linear(raw, Q.Q6_K, ROWS, COLS)


def test_factor_finds_the_grid_only_where_there_is_one():
    d = np.array([0.0123, 0.5], dtype=np.float16).astype(np.float32)[:, None]
    q = np.array([[63, 1, 0, 17, 40, 2, 9, 63], [5, 0, 0, 0, 0, 0, 0, 12]], dtype=np.float32)
    sub = K.factor(d * q, 0, 63)
    assert sub is not None and np.array_equal(sub.d.astype(np.float32)[:, None] * sub.q, d * q)
    assert K.factor(d * q + np.float32(1e-7), 0, 63) is None  # negative control: off the grid


def rel_rmse(got, want):
    return float(np.sqrt(((got - want) ** 2).mean()) / want.std())


@pytest.mark.parametrize("kind,rtn", [(Q.Q4_K, "affine4-g32"), (Q.Q6_K, "int6-g16")])
def test_float_weights_quantize_no_worse_than_rtn_at_the_same_groups(kind, rtn):
    """Least-squares sub-block scales beat round-to-nearest with free fp16 scales even after the
    sub-scales are rounded to 6 / 8 bits (measured: Q4_K 0.083 vs 0.091, Q6_K 0.0195 vs 0.0210)."""
    torch.manual_seed(0)
    w = torch.randn(64, 1024) * 0.02
    w[:, :7] *= 8  # outlier columns
    raw = K.kquant_float(w, kind.name)
    ours = rel_rmse(dequantized(raw.reshape(-1), kind, 64, 1024), w.numpy())
    baseline = rel_rmse(quantize(w, parse_spec(rtn)).dequantize().numpy(), w.numpy())
    assert ours < baseline, (ours, baseline)
    # negative control: the same bytes with each row's super-blocks in reverse order
    swapped = raw.reshape(64, 4, -1)[:, ::-1].copy().reshape(-1)
    assert rel_rmse(dequantized(swapped, kind, 64, 1024), w.numpy()) > 2 * baseline


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory, calib_text):
    """A tiny Llama whose every linear input is 256 or 512 wide, quantized RTN int4-g32."""
    from tiny_models import make_tiny_model

    from quantwise.calibration import CalibrationConfig
    from quantwise.methods import build_method
    from quantwise.pipeline.sequential import QuantizeJob, run_quantize

    model = make_tiny_model(tmp_path_factory.mktemp("wide") / "model", "llama", layers=2, hidden=256,
                            intermediate=512, head_dim=64)
    out = tmp_path_factory.mktemp("wide") / "ckpt"
    run_quantize(QuantizeJob(str(model), "rtn", build_method("rtn", "int4-g32"),
                             CalibrationConfig((str(calib_text),), samples=2, seq_len=16, seed=1), out))
    return out


def tensors_of(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("kind", ["q4_k", "q6_k"])
def test_kquant_export_imports_as_codes_and_exports_back_byte_for_byte(wide_llama, kind, tmp_path):
    import quantwise
    from quantwise.checkpoint.importers import import_checkpoint

    first = export(wide_llama, "gguf", tmp_path / "a", ExportOptions(gguf_type=kind))
    assert first["tensor_types"] == [kind.upper()] and first["kquant_fallback"] == []
    # the untied output's 256-wide rows are a super-block: Q6_K, as llama-quantize stores it
    assert first["embedding_types"] == {"token_embd.weight": "Q8_0", "output.weight": "Q6_K"}
    source = tensors_of(tmp_path / "a" / "model.gguf")
    imported = import_checkpoint(tmp_path / "a" / "model.gguf", tmp_path / "imported")
    model = quantwise.load(imported, kernels=False)
    down = model.model.layers[1].mlp.down_proj
    assert down.weight_q.spec.name == ("affine4-g32" if kind == "q4_k" else "int6-g16")
    assert np.array_equal(down.dense_weight().numpy(), dequantized(source["blk.1.ffn_down.weight"].data,
                                                                   Q[kind.upper()], 256, 512))
    export(imported, "gguf", tmp_path / "b")  # no option: the codes choose Q4_K / Q6_K themselves
    again = tensors_of(tmp_path / "b" / "model.gguf")
    linears = [n for n, t in source.items() if t.tensor_type == Q[kind.upper()] and n.startswith("blk.")]
    assert len(linears) == 2 * 7
    for name in linears:
        assert again[name].tensor_type == source[name].tensor_type
        assert np.array_equal(np.asarray(again[name].data), np.asarray(source[name].data)), name


def test_kquant_rows_that_are_no_multiple_of_256_fall_back_and_are_listed(quantized, tmp_path):
    ckpt = quantized("rtn", "int4-g32")  # 64 and 96 wide
    result = export(ckpt, "gguf", tmp_path / "g", ExportOptions(gguf_type="q4_k"))
    assert result["tensor_types"] == ["Q4_0"] and len(result["kquant_fallback"]) == 3 * 7
    assert "not a multiple of 256" in result["kquant_fallback"][0]
    with pytest.raises(ExportError, match="choose one of q4_k, q6_k"):
        export(ckpt, "gguf", tmp_path / "bad", ExportOptions(gguf_type="q5_k"))
    from click.testing import CliRunner

    from quantwise.cli.main import cli

    shown = CliRunner().invoke(cli, ["export", str(ckpt), "--to", "gguf", "--out", str(tmp_path / "cli"),
                                     "--gguf-type", "q6_k"])
    assert shown.exit_code == 0 and shown.output.count("not a K-quant") == 3 * 7, shown.output


def test_q4_1_imports_as_affine_codes_and_exports_back_byte_for_byte(quantized, tmp_path):
    """Q4_1's float minimum m is no multiple of d: affine4-g32 (fp16 scale and offset) holds it, so the
    import is bit-exact and the re-export writes the same blocks."""
    import quantwise
    from quantwise.checkpoint.importers import import_checkpoint

    export(quantized("rtn", "int4-g32-asym"), "gguf", tmp_path / "a")
    source = tensors_of(tmp_path / "a" / "model.gguf")
    back = quantwise.load(import_checkpoint(tmp_path / "a" / "model.gguf", tmp_path / "back"), kernels=False)
    down = back.model.layers[0].mlp.down_proj
    assert down.weight_q.spec.name == "affine4-g32" and down.weight_q.spec.scale_dtype_name == "float16"
    raw = source["blk.0.ffn_down.weight"].data
    assert np.array_equal(down.dense_weight().numpy(), dequantized(raw, Q.Q4_1, 64, 96))
    export(tmp_path / "back", "gguf", tmp_path / "b")
    again = tensors_of(tmp_path / "b" / "model.gguf")
    q4_1 = [n for n, t in source.items() if t.tensor_type == Q.Q4_1]
    assert len(q4_1) == 3 * 7
    assert all(np.array_equal(np.asarray(again[n].data), np.asarray(source[n].data)) for n in q4_1)
    # negative control: asymmetric INT4 (an integer zero point) re-quantizing the same values loses them
    values = dequantized(raw, Q.Q4_1, 64, 96)
    as_int = quantize(torch.from_numpy(values.copy()), parse_spec("int4-g32-asym")).dequantize().numpy()
    assert not np.array_equal(as_int, values)
