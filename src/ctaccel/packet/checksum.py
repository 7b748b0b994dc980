"""Internet (ones'-complement) checksums, numba-ready, plus a plain-bytes variant.

What: the RFC 1071 checksum over a byte range of a frame, and the IPv4/IPv6 pseudo-header
sums that TCP, UDP and ICMPv6 checksums include. ``parse.py`` uses the jitted kernels to
validate checksums; ``build.py`` uses :func:`checksum_bytes` to fill them in; header
rewrites (conntrack/nat.py, packet/rewrite.py) update them with :func:`recalc16`, as OVS.

Design: a checksum is computed in two stages, as OVS's csum_continue/csum_finish do: an
*unfolded* accumulator (a plain int64 sum of big-endian words, 32 bits at a time, then a
16-bit one; a trailing odd byte is the high byte of a last word padded with zero; it folds to
the sum of the 16-bit words), then :func:`ones_fold` folds carries back into 16 bits. Sums
of several pieces (pseudo-header + L4 bytes) just add accumulators. A received header or
segment is valid when the folded sum over it (checksum field included) is 0xffff, i.e. the
finished checksum (``~fold``) is 0.

Invariants:
- Every kernel reads only ``data[start:start+length]`` and clips that range to the array,
  so no input can index out of bounds.
- Accumulators stay below 2**48 for any frame (fewer than 2**15 words of at most 2**32 - 1),
  so int64 never overflows and no unsigned arithmetic is needed. Only folded sums are
  compared.
"""

from __future__ import annotations

import numpy as np

from ctaccel.jit import njit


@njit(forceinline=True)
def ones_sum(data, start, length):
    """Unfolded sum of ``data[start:start+length]`` whose fold is the ones'-complement sum of
    its big-endian 16-bit words."""
    end = start + length
    if end > data.shape[0]:
        end = data.shape[0]
    if start < 0:
        start = 0
    acc = np.int64(0)
    i = start
    # 32-bit big-endian words: hi * 2**16 + lo folds to hi + lo (2**16 = 1 mod 0xffff), so the
    # folded sum is the 16-bit words' one, in half the steps
    while i + 3 < end:
        acc += ((np.int64(data[i]) << 24) | (np.int64(data[i + 1]) << 16)
                | (np.int64(data[i + 2]) << 8) | np.int64(data[i + 3]))  # fmt: skip
        i += 4
    if i + 1 < end:
        acc += (np.int64(data[i]) << 8) | np.int64(data[i + 1])
        i += 2
    if i < end:  # odd length: the last byte is the high half of a zero-padded word
        acc += np.int64(data[i]) << 8
    return acc


@njit(forceinline=True)
def ones_fold(acc):
    """Fold an unfolded accumulator into 16 bits (end-around carry)."""
    while acc > 0xFFFF:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


@njit(forceinline=True)
def internet_checksum(data, start, length):
    """The checksum value to store for ``data[start:start+length]`` (field zeroed)."""
    return (~ones_fold(ones_sum(data, start, length))) & 0xFFFF


@njit(forceinline=True)
def pseudo_sum_v4(data, ip_ofs, proto, l4_len):
    """Unfolded IPv4 pseudo-header sum: source, destination, protocol, L4 length.

    The addresses are read from the IPv4 header at ``ip_ofs`` (bytes 12..19)."""
    return ones_sum(data, ip_ofs + 12, 8) + proto + l4_len


@njit(forceinline=True)
def pseudo_sum_v6(data, ip_ofs, proto, l4_len):
    """Unfolded IPv6 pseudo-header sum: source, destination (as in the fixed header, as
    OVS does, even with a routing header), upper-layer length, next header."""
    return ones_sum(data, ip_ofs + 8, 32) + proto + (l4_len >> 16) + (l4_len & 0xFFFF)


@njit(forceinline=True)
def recalc16(csum, old, new):
    """OVS recalc_csum16 (RFC 1624): the checksum after a 16-bit field changed from old to
    new; a checksum that was wrong stays as wrong."""
    s = ((~csum) & 0xFFFF) + ((~old) & 0xFFFF) + (new & 0xFFFF)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


@njit(forceinline=True)
def recalc32(csum, old, new):
    """OVS recalc_csum32: both halves, the first two bytes on the wire first."""
    csum = recalc16(csum, (old >> 16) & 0xFFFF, (new >> 16) & 0xFFFF)
    return recalc16(csum, old & 0xFFFF, new & 0xFFFF)


@njit(forceinline=True)
def sum_is_valid(acc):
    """True when a received checksum verifies: the folded sum is all ones."""
    return ones_fold(acc) == 0xFFFF


# --- plain Python (builders, tests) ----------------------------------------------------------


def sum_bytes(data: bytes) -> int:
    """Unfolded ones'-complement sum of ``data`` as big-endian 16-bit words (plain Python)."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    if not data:
        return 0
    return int(np.frombuffer(data, dtype=">u2").sum(dtype=np.int64))


def fold(acc: int) -> int:
    """Fold a plain-Python accumulator into 16 bits."""
    while acc > 0xFFFF:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def checksum_bytes(data: bytes, initial: int = 0) -> int:
    """The checksum to store for ``data`` (checksum field zeroed), plus an optional
    unfolded ``initial`` sum such as a pseudo-header."""
    return (~fold(initial + sum_bytes(data))) & 0xFFFF
