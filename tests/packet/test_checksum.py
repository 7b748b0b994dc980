"""The jitted ones'-complement sum against a plain 16-bit-word sum (RFC 1071).

The folded sum and the checksum must agree for every start, length (odd ones included) and
range that runs past the end of the data (the kernel clips it, as the parser relies on).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ctaccel.jit import njit
from ctaccel.packet.checksum import fold, internet_checksum, ones_fold, ones_sum


def _plain_words_sum(data: bytes, start: int, length: int) -> int:
    """The RFC 1071 way, one big-endian 16-bit word at a time, odd byte zero-padded."""
    end = min(start + length, len(data))
    start = max(start, 0)
    acc = 0
    for i in range(start, end - 1, 2):
        acc += (data[i] << 8) | data[i + 1]
    if (end - start) % 2 == 1 and end > start:
        acc += data[end - 1] << 8
    return acc


@njit
def _folded(data, start, length):
    return ones_fold(ones_sum(data, start, length))


@njit
def _checksum(data, start, length):
    return internet_checksum(data, start, length)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=200),
    start=st.integers(0, 40),
    length=st.integers(0, 240),
)
def test_folded_sum_matches_16_bit_words(data, start, length):
    arr = np.frombuffer(data, np.uint8).copy()
    want = fold(_plain_words_sum(data, start, length))
    assert _folded(arr, start, length) == want
    assert _checksum(arr, start, length) == (~want) & 0xFFFF


def test_all_ones_and_zero_sums_stay_distinct():
    # 0xffff words sum to a nonzero multiple of 0xffff: folded 0xffff, never 0 (the two
    # ones'-complement zeros differ for checksum validation)
    ones = np.full(24, 0xFF, np.uint8)
    zeros = np.zeros(24, np.uint8)
    assert _folded(ones, 0, 24) == 0xFFFF
    assert _folded(zeros, 0, 24) == 0
    assert _folded(ones, 0, 7) == fold(_plain_words_sum(bytes(ones), 0, 7))
