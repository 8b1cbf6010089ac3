import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantwise.formats.packing import pack_codes, packed_cols, unpack_codes


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 6), cols=st.integers(1, 70), seed=st.integers(0, 2**31))
def test_pack_unpack_round_trips_exactly(bits, rows, cols, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (rows, cols), generator=gen, dtype=torch.int64).to(torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.shape == (rows, packed_cols(cols, bits))
    assert torch.equal(unpack_codes(packed, bits, cols), codes)


def test_two_int4_per_byte_low_nibble_first():
    codes = torch.tensor([[1, 2, 15, 0, 7]], dtype=torch.uint8)
    packed = pack_codes(codes, 4)
    assert packed.tolist() == [[0x21, 0x0F, 0x07]]


def test_three_bit_stream_layout():
    # codes 5 (101), 3 (011), 6 (110): bits little-endian 1,0,1, 1,1,0, 0,1,1 -> byte 0b10011101, then 0b1
    packed = pack_codes(torch.tensor([[5, 3, 6]], dtype=torch.uint8), 3)
    assert packed.tolist() == [[0b10011101, 0b1]]
