import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantwise.formats import parse_spec, quantize, storage_bytes

NAMES = ["int8-channel", "int8-tensor-asym", "int4-g128", "int4-g128-asym", "int3-g64-asym", "int2-g32",
         "int5-channel", "nf4-g64", "nf4-g64-dq", "fp8_e4m3-channel", "fp8_e5m2-tensor", "fp16", "bf16",
         "int4-g7", "int8-token", "affine4-g32", "affine3-g64", "affine8-channel"]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), rows=st.integers(1, 40), cols=st.integers(1, 700))
def test_analytic_storage_equals_real_packed_storage(name, rows, cols):
    spec = parse_spec(name)
    assert storage_bytes(spec, rows, cols) == quantize(torch.randn(rows, cols), spec).nbytes


def test_specs_import_without_torch():
    import subprocess
    code = "import quantwise.formats as f, sys; f.storage_bytes(f.parse_spec('int4'), 8, 8); " \
           "assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_shape():
    with pytest.raises(ValueError):
        storage_bytes(parse_spec("int4"), 0, 10)
