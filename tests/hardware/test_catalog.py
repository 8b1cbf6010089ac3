import pytest

from quantwise.hardware import load_catalog, support_matrix

EXPECTED_IDS = {"h100-sxm", "h100-pcie", "h200", "b200", "a100-80gb", "a100-40gb", "a10g", "l4", "l40s",
                "rtx-4090", "rtx-3090", "mi300x"}


def test_catalogue_rows_have_sources_and_dense_figures():
    catalog = load_catalog()
    assert set(catalog) == EXPECTED_IDS
    for gpu in catalog.values():
        assert gpu.spec_source and gpu.price_source and gpu.price_per_hour > 0
    assert catalog["h100-sxm"].fp16_tflops == 989  # dense, not the 1979 sparse headline
    assert catalog["rtx-4090"].fp16_tflops == 165  # FP32 accumulate
    assert catalog["h100-sxm"].int4_tops is None and catalog["b200"].int4_tops is None
    assert catalog["a100-80gb"].fp8_tflops is None


def test_support_matrix_is_derived_from_data():
    cells = {(c.format, c.gpu): c for c in support_matrix(list(load_catalog().values()))}
    assert cells[("fp8", "rtx-4090")].path.value == "native"
    assert cells[("fp8", "a100-80gb")].path.value == "dequantize"
    assert cells[("int4", "h100-sxm")].path.value == "dequantize"
    assert cells[("int4", "h100-sxm")].disagrees_with_lesson
    assert not cells[("int8", "a100-80gb")].disagrees_with_lesson


def test_user_file_adds_and_overrides(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("id,name,memory_gb,bandwidth_tbps,fp16_tflops,int8_tops,price_per_hour\n"
                    "h100-sxm,H100 cheap,80,3.35,989,1979,1.99\n"
                    "my-gpu,Mine,32,1.0,100,200,0.5\n")
    catalog = load_catalog(path)
    assert catalog["h100-sxm"].price_per_hour == 1.99
    assert catalog["my-gpu"].fp8_tflops is None


@pytest.mark.parametrize("body,needle", [
    ("id,name,memory_gb,bandwidth_tbps,fp16_tflops,price_per_hour\nx,X,80,fast,100,1\n", "not a number"),
    ("id,name,memory_gb,bandwidth_tbps,fp16_tflops\nx,X,80,1,100\n", "price_per_hour"),
    ("id,name,memory_gb,bandwidth_tbps,fp16_tflops,price_per_hour\nx,X,-80,1,100,1\n", "positive"),
])
def test_bad_user_files(tmp_path, body, needle):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=needle):
        load_catalog(path)
    with pytest.raises(FileNotFoundError):
        load_catalog(tmp_path / "missing.csv")
