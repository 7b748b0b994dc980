"""The fast path's entry key packs every header field without loss.

``fastpath._pack_em_key`` packs the key columns into EM_WIDTH words with shifts and masks only,
so it is linear over bits: it is injective exactly when every bit of every field lands on a
bit of its own. Each bit of each field is set alone and must come out as one bit, never the
sign bit, never a bit another field bit took; the compiled packer must agree with its source.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.datapath import fastpath
from ctaccel.datapath.exact import python_source
from ctaccel.datapath.layout import EM_WIDTH
from ctaccel.jit import njit
from ctaccel.packet import key as K

# every column the entry key covers, with its field's width in bits
FIELDS = {
    K.IN_PORT: 16,
    K.DL_TYPE: 16,
    K.VLAN_TCI: 16,
    K.DL_SRC: 48,
    K.DL_DST: 48,
    **{K.NW_SRC + i: 32 for i in range(4)},
    **{K.NW_DST + i: 32 for i in range(4)},
    K.TP_SRC: 16,
    K.TP_DST: 16,
    K.TCP_FLAGS: 12,
    K.NW_PROTO: 8,
    K.NW_TOS: 8,
    K.NW_TTL: 8,
    K.IPV6_LABEL: 20,
    K.NW_FRAG: 2,
}
ALL_FLAGS = 0xFFF
plain_pack = python_source(fastpath._pack_em_key)


@njit
def _compiled_pack(key, out, flags_mask):
    fastpath._pack_em_key(key, out, flags_mask)


def _packed(key, jit=False):
    out = np.zeros(EM_WIDTH, np.int64)
    (_compiled_pack if jit else plain_pack)(key, out, ALL_FLAGS)
    return out


def test_every_field_bit_has_a_bit_of_its_own():
    taken: dict[tuple[int, int], tuple[int, int]] = {}
    for col, width in FIELDS.items():
        for bit in range(width):
            key = np.zeros(K.KEY_WIDTH, np.int64)
            key[col] = 1 << bit
            words = [int(w) for w in _packed(key)]
            set_bits = [(w, b) for w, v in enumerate(words) for b in range(64) if v >> b & 1]
            assert len(set_bits) == 1, (col, bit, words)
            where = set_bits[0]
            assert where[1] < 63, f"column {col} bit {bit} reaches the sign bit"
            assert where not in taken, f"column {col} bit {bit} collides with {taken[where]}"
            taken[where] = (col, bit)
    assert len(taken) == sum(FIELDS.values())


def test_other_columns_do_not_reach_the_key():
    key = np.zeros(K.KEY_WIDTH, np.int64)
    others = [c for c in range(K.KEY_WIDTH) if c not in FIELDS]
    key[others] = 0x7FFF_FFFF
    assert not _packed(key).any()


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_compiled_packing_matches_its_source(data):
    key = np.zeros(K.KEY_WIDTH, np.int64)
    for col, width in FIELDS.items():
        key[col] = data.draw(st.integers(0, (1 << width) - 1))
    np.testing.assert_array_equal(_packed(key, jit=True), _packed(key))
    assert (_packed(key) >= 0).all()
