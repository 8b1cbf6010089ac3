import dataclasses

import pytest

from quantwise.errors import QuantwiseError
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


def test_user_file_overrides_column_by_column(tmp_path):
    # Overriding only the price keeps the H100's FP8/INT8 rates and its NVLink (a partial row used
    # to wipe them, and every FP8/INT8 plan on it vanished).
    path = tmp_path / "mine.csv"
    path.write_text("id,price_per_hour\nh100-sxm,1.99\n")
    packaged, mine = load_catalog()["h100-sxm"], load_catalog(path)["h100-sxm"]
    assert mine.price_per_hour == 1.99 and mine.price_source == str(path) and mine.price_date == ""
    assert dataclasses.replace(mine, price_per_hour=packaged.price_per_hour, price_source=packaged.price_source,
                               price_date=packaged.price_date) == packaged
    # a figure the user gave is theirs: the catalogue's 'unconfirmed' mark on it goes, others stay
    path.write_text("id,price_per_hour\nrtx-3090,0.30\n")
    assert load_catalog()["rtx-3090"].unconfirmed == ("int4_tops", "price_per_hour")
    assert load_catalog(path)["rtx-3090"].unconfirmed == ("int4_tops",)


def test_new_gpu_must_give_every_column(tmp_path):
    full = tmp_path / "full.csv"
    full.write_text("id,name,arch,class,availability,memory_gb,bandwidth_tbps,fp16_tflops,fp8_tflops,int8_tops,"
                    "int4_tops,fp4_tflops,interconnect,interconnect_gbps,price_per_hour,price_source,spec_source\n"
                    "my-gpu,Mine,ada,workstation,limited,32,1.0,100,200,200,none,none,PCIe Gen4 x16,32,0.5,me,me\n")
    mine = load_catalog(full)["my-gpu"]
    assert (mine.fp8_tflops, mine.int4_tops, mine.gpu_class) == (200, None, "workstation")
    partial = tmp_path / "partial.csv"
    partial.write_text("id,name,memory_gb,bandwidth_tbps,fp16_tflops,int8_tops,price_per_hour\n"
                       "my-gpu,Mine,32,1.0,100,200,0.5\n")
    with pytest.raises(QuantwiseError, match="new GPU 'my-gpu' must give every column; missing arch, class, "
                                             "availability, fp8_tflops, int4_tops, fp4_tflops, interconnect"):
        load_catalog(partial)


def test_classes_and_fp4():
    catalog = load_catalog()
    assert {g.id for g in catalog.values() if g.gpu_class == "consumer"} == {"rtx-4090", "rtx-3090"}
    assert catalog["b200"].fp4_tflops == 9000  # HGX B200 datasheet: 18 PFLOPS sparse FP4, halved
    assert all(g.fp4_tflops is None for g in catalog.values() if g.arch != "blackwell")


@pytest.mark.parametrize("body,needle", [
    ("id,bandwidth_tbps\nh100-sxm,fast\n", "not a number"),
    ("id,name,memory_gb,bandwidth_tbps,fp16_tflops\nx,X,80,1,100\n", "price_per_hour"),
    ("id,memory_gb\nh100-sxm,-80\n", "positive"),
    ("id,class\nh100-sxm,gaming\n", "class"),
])
def test_bad_user_files(tmp_path, body, needle):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=needle):
        load_catalog(path)
    with pytest.raises(FileNotFoundError):
        load_catalog(tmp_path / "missing.csv")


def test_geforce_fp16_accumulate_rate_is_twice_the_listed_one():
    catalog = load_catalog()
    assert catalog["rtx-4090"].fp16_acc_tflops == 2 * catalog["rtx-4090"].fp16_tflops
    assert catalog["rtx-3090"].fp16_acc_tflops == 2 * catalog["rtx-3090"].fp16_tflops
    assert catalog["h100-sxm"].fp16_acc_tflops is None
