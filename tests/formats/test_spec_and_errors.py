import math

import pytest
import torch

from quantwise.formats import QuantSpec, error_metrics, parse_spec, quantize


@pytest.mark.parametrize("bad", [
    dict(kind="int", bits=1), dict(kind="int", bits=9), dict(kind="int", bits=16),
    dict(kind="int", bits=4, granularity="group", group_size=0),
    dict(kind="int", bits=4, granularity="group", group_size=-4),
    dict(kind="int", bits=4, granularity="group"),
    dict(kind="int", bits=4, granularity="channel", group_size=64),
    dict(kind="nf4", bits=8), dict(kind="fp8_e4m3", symmetric=False),
    dict(kind="int", bits=4, double_quant=True), dict(kind="int", bits=4, scale_dtype="float64"),
    dict(kind="int4"),
])
def test_bad_specs_raise_value_error(bad):
    with pytest.raises(ValueError):
        QuantSpec(**bad)


@pytest.mark.parametrize("values,needle", [
    (torch.tensor([1.0, float("nan")]), "NaN/Inf"),
    (torch.tensor([1.0, float("inf")]), "NaN/Inf"),
    (torch.empty(0, 16), "empty"),
    (torch.tensor([1, 2, 3]), "floating-point"),
])
@pytest.mark.parametrize("name", ["int4-g128", "nf4-g64", "fp8_e4m3-tensor", "fp16"])
def test_bad_tensors_raise_value_error(values, needle, name):
    with pytest.raises(ValueError, match=needle):
        quantize(values, parse_spec(name))


def test_fp16_overflow_is_refused():
    with pytest.raises(ValueError, match="range"):
        quantize(torch.tensor([1e6]), parse_spec("fp16"))


@pytest.mark.parametrize("name", ["int4-g128-asym", "int8-channel", "nf4-g64-dq", "fp8_e5m2-channel",
                                  "int3-g64", "bf16", "int2-tensor-asym"])
def test_names_round_trip(name):
    assert parse_spec(name).name == name


def test_parse_defaults_and_errors():
    assert parse_spec("int4").group_size == 128
    assert parse_spec("nf4").group_size == 64
    assert parse_spec("int8").granularity.value == "channel"
    with pytest.raises(ValueError, match="unknown format"):
        parse_spec("int4-g")
    with pytest.raises(ValueError, match="2..8 bits"):
        parse_spec("int12")


def test_error_metrics_values():
    ref = torch.tensor([3.0, 4.0])
    m = error_metrics(ref, torch.tensor([3.0, 5.0]))
    assert m.mse == pytest.approx(0.5)
    assert m.max_abs == pytest.approx(1.0)
    assert m.sqnr_db == pytest.approx(10 * math.log10(25 / 1))
    assert m.cosine == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert error_metrics(ref, ref).sqnr_db == math.inf
