"""Output records built a batch at a time in compiled code: pcap records and JSON lines.

What: :func:`pcap_records` writes the pcap record (header and frame) of every frame of a batch
into one buffer, for one ``write`` per batch and port; :func:`json_lines` writes one
``packets.jsonl`` line per packet into one buffer, byte for byte what ``json.dumps`` of the
record dict gives (``{"n": 1, "in_port": 1, "out": [2], "ct_state": "est|trk",
"drop_reason": null, "path": "fast"}``); :func:`gather` copies frames from a capture into one
contiguous batch buffer. Python prepares per-batch arrays and calls each once per batch:
nothing is formatted or written per packet in Python.

Design: strings come from small closed vocabularies (ct_state spellings, drop reasons, paths,
the controller) prepared once as JSON tokens (``"est|trk"``, ``null``) in a token table
(``tokens[t, :token_len[t]]``); a packet refers to a token by index. Output ports are given as
one concatenated array with a start and a count per packet (a port < 0 is the controller's
token). Frames of a batch may live in up to three buffers (the received frames, the engine's
rewritten copies, frames of the reference engine's results), chosen per record.

Invariants: the kernels never allocate; the caller sizes the output buffer (the functions
``*_size`` say how much) and gets back the bytes used.
"""

from __future__ import annotations

import numpy as np

from ctaccel.jit import copy_bytes, njit

PCAP_RECORD_HEADER = 16


@njit
def gather(dst, dst_offsets, src, src_offsets, lengths):
    """Copy frame ``i`` from ``src[src_offsets[i]:]`` to ``dst[dst_offsets[i]:]`` (uint8
    arrays, two different ones)."""
    for i in range(lengths.shape[0]):
        copy_bytes(dst, dst_offsets[i], src, src_offsets[i], lengths[i])


@njit(forceinline=True)
def _put_u32le(out, pos, v):
    out[pos] = v & 0xFF
    out[pos + 1] = (v >> 8) & 0xFF
    out[pos + 2] = (v >> 16) & 0xFF
    out[pos + 3] = (v >> 24) & 0xFF


def pcap_records_size(lengths, snaplen: int) -> int:
    return int(np.minimum(lengths, snaplen).sum()) + PCAP_RECORD_HEADER * len(lengths)


@njit
def pcap_records(out, ts_ns, which, offsets, lengths, bufs, snaplen, nanosecond):
    """Pcap records of frames ``bufs[which[i]][offsets[i]:+lengths[i]]`` stamped ``ts_ns[i]``
    (cut to ``snaplen``, the original length kept), appended from ``out[0]``; bytes used."""
    pos = 0
    for i in range(lengths.shape[0]):
        pos = pcap_record(out, pos, ts_ns[i], bufs[which[i]], offsets[i], lengths[i],
                          snaplen, nanosecond)  # fmt: skip
    return pos


@njit(forceinline=True)
def pcap_record(out, pos, ts_ns, src, offset, length, snaplen, nanosecond):
    """The record of frame ``src[offset:+length]`` at ``out[pos:]``; the position after it."""
    secs = ts_ns // 1_000_000_000
    frac = ts_ns - secs * 1_000_000_000
    if not nanosecond:
        frac //= 1000
    incl = min(length, snaplen)
    _put_u32le(out, pos, secs & 0xFFFFFFFF)
    _put_u32le(out, pos + 4, frac)
    _put_u32le(out, pos + 8, incl)
    _put_u32le(out, pos + 12, length)
    pos += PCAP_RECORD_HEADER
    copy_bytes(out, pos, src, offset, incl)
    return pos + incl


@njit(forceinline=True)
def _put_int(out, pos, v):
    """Decimal digits of ``v`` (any int64)."""
    if v < 0:
        out[pos] = 45  # '-'
        pos += 1
        v = -v
    digits = 1
    t = v
    while t >= 10:
        t //= 10
        digits += 1
    for d in range(digits - 1, -1, -1):
        out[pos + d] = 48 + v % 10
        v //= 10
    return pos + digits


@njit(forceinline=True)
def _put_row(out, pos, table, ofs, lens, t):
    """Entry ``t`` of a byte table (``table[ofs[t]:+lens[t]]``) at ``out[pos:]``."""
    n = lens[t]
    copy_bytes(out, pos, table, ofs[t], n)
    return pos + n


# columns of json_lines' per-packet table
JL_N, JL_IN_PORT, JL_OUT_START, JL_OUT_COUNT, JL_CT, JL_DROP, JL_PATH = range(7)
JL_WIDTH = 7

TAIL_SLOTS = 256  # the tail cache of json_line: direct-mapped, by (ct, drop, path) tokens


@njit(forceinline=True)
def json_line(out, pos, row, ports, tokens, token_ofs, token_len, tail_key, tail_len, tail_bytes):
    """The JSON line of one packet at ``out[pos:]``; the position after it. ``row``: its JL_*
    columns (its outputs are ``ports[out_start:+out_count]``, a port < 0 the controller);
    ``tokens``/``token_ofs``/``token_len``: the token table (:meth:`TokenTable.arrays`: the
    line's constant pieces first, then "controller", then the values); ``tail_*``: a tail
    cache (:func:`new_tails`).

    The line's tail (``], "ct_state": ..., "drop_reason": ..., "path": ...}``) depends only
    on its three tokens: it is built once per triple into the cache and copied whole. Every
    copy is one memcpy (jit.copy_bytes): byte loops and array views cost more than the
    formatting."""
    pos = _put_row(out, pos, tokens, token_ofs, token_len, 0)
    pos = _put_int(out, pos, row[JL_N])
    pos = _put_row(out, pos, tokens, token_ofs, token_len, 1)
    pos = _put_int(out, pos, row[JL_IN_PORT])
    pos = _put_row(out, pos, tokens, token_ofs, token_len, 2)
    start = row[JL_OUT_START]
    for k in range(row[JL_OUT_COUNT]):
        if k:
            pos = _put_row(out, pos, tokens, token_ofs, token_len, 3)
        p = ports[start + k]
        if p < 0:
            pos = _put_row(out, pos, tokens, token_ofs, token_len, TOKEN_CONTROLLER)
        else:
            pos = _put_int(out, pos, p)
    key = (row[JL_CT] << 40) | (row[JL_DROP] << 20) | row[JL_PATH]
    slot = (key ^ (key >> 17) ^ (key >> 35)) & (TAIL_SLOTS - 1)
    width = tail_bytes.shape[0] // TAIL_SLOTS
    if tail_key[slot] != key:
        at = _put_row(tail_bytes, slot * width, tokens, token_ofs, token_len, 4)
        at = _put_row(tail_bytes, at, tokens, token_ofs, token_len, row[JL_CT])
        at = _put_row(tail_bytes, at, tokens, token_ofs, token_len, 5)
        at = _put_row(tail_bytes, at, tokens, token_ofs, token_len, row[JL_DROP])
        at = _put_row(tail_bytes, at, tokens, token_ofs, token_len, 6)
        at = _put_row(tail_bytes, at, tokens, token_ofs, token_len, row[JL_PATH])
        tail_len[slot] = _put_row(tail_bytes, at, tokens, token_ofs, token_len, 7) - slot * width
        tail_key[slot] = key
    n = tail_len[slot]
    copy_bytes(out, pos, tail_bytes, slot * width, n)
    return pos + n


@njit
def json_lines(out, cols, ports, text):
    """One JSON line per row of ``cols`` (JL_* columns: n, in_port, the packet's outputs as
    ``ports[out_start:+out_count]``, and the token indexes of its ct_state, drop reason and
    path); returns the bytes used. ``text`` = (token table, tail cache) as for
    :func:`json_line`."""
    (tokens, token_ofs, token_len), (tail_key, tail_len, tail_bytes) = text
    pos = 0
    for i in range(cols.shape[0]):
        pos = json_line(out, pos, cols[i], ports, tokens, token_ofs, token_len, tail_key,
                        tail_len, tail_bytes)  # fmt: skip
    return pos


JSON_PARTS = (
    '{"n": ',
    ', "in_port": ',
    ', "out": [',
    ", ",
    '], "ct_state": ',
    ', "drop_reason": ',
    ', "path": ',
    "}\n",
)
TOKEN_CONTROLLER = len(JSON_PARTS)  # the token "controller", after the constant pieces


def new_tails(max_token: int):
    """An empty tail cache for json_line, for tokens of up to ``max_token`` bytes (a new one
    is needed when the token table changes: cached tails would be stale)."""
    width = sum(len(p) for p in JSON_PARTS[4:]) + 3 * max(max_token, 1)
    return (np.full(TAIL_SLOTS, -1, np.int64), np.zeros(TAIL_SLOTS, np.int64),
            np.zeros(TAIL_SLOTS * width, np.uint8))  # fmt: skip


def json_lines_size(n_packets: int, n_ports: int, max_token: int) -> int:
    """An upper bound on the bytes :func:`json_lines` writes."""
    fixed = sum(len(p) for p in JSON_PARTS)
    return n_packets * (fixed + 2 * 20 + 3 * max_token) + n_ports * (20 + 2 + max_token)


class TokenTable:
    """JSON tokens (strings quoted and escaped as json.dumps does, or ``null``) by index."""

    def __init__(self):
        self._index: dict = {}
        # the constant pieces of a line, then "controller" (TOKEN_CONTROLLER), then values
        self._texts: list[bytes] = [p.encode() for p in JSON_PARTS]
        self.values: list = [None] * len(JSON_PARTS)  # the token's value, by index
        self.add("controller")

    def add(self, value) -> int:
        import json

        key = ("s", value) if isinstance(value, str) else ("v", value)
        t = self._index.get(key)
        if t is None:
            t = self._index[key] = len(self._texts)
            self._texts.append(json.dumps(value).encode())
            self.values.append(value)
        return t

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bytes, offsets, lengths): token ``t`` is ``bytes[offsets[t]:+lengths[t]]``."""
        lens = np.array([len(t) for t in self._texts], np.int64)
        ofs = np.zeros(len(lens), np.int64)
        np.cumsum(lens[:-1], out=ofs[1:])
        return np.frombuffer(b"".join(self._texts), np.uint8).copy(), ofs, lens

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def max_len(self) -> int:
        return max((len(t) for t in self._texts), default=0)
