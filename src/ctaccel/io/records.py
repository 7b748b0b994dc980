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

from ctaccel.jit import njit

PCAP_RECORD_HEADER = 16


@njit
def gather(dst, dst_offsets, src, src_offsets, lengths):
    """Copy frame ``i`` from ``src[src_offsets[i]:]`` to ``dst[dst_offsets[i]:]``."""
    for i in range(lengths.shape[0]):
        d, s, n = dst_offsets[i], src_offsets[i], lengths[i]
        dst[d : d + n] = src[s : s + n]


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
        t = ts_ns[i]
        secs = t // 1_000_000_000
        frac = t - secs * 1_000_000_000
        if not nanosecond:
            frac //= 1000
        orig = lengths[i]
        incl = min(orig, snaplen)
        _put_u32le(out, pos, secs & 0xFFFFFFFF)
        _put_u32le(out, pos + 4, frac)
        _put_u32le(out, pos + 8, incl)
        _put_u32le(out, pos + 12, orig)
        pos += PCAP_RECORD_HEADER
        s = offsets[i]
        out[pos : pos + incl] = bufs[which[i]][s : s + incl]
        pos += incl
    return pos


@njit(forceinline=True)
def _put_bytes(out, pos, text):
    for b in range(text.shape[0]):
        out[pos + b] = text[b]
    return pos + text.shape[0]


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
def _put_token(out, pos, tokens, token_len, t):
    for b in range(token_len[t]):
        out[pos + b] = tokens[t, b]
    return pos + token_len[t]


# columns of json_lines' per-packet table
JL_N, JL_IN_PORT, JL_OUT_START, JL_OUT_COUNT, JL_CT, JL_DROP, JL_PATH = range(7)
JL_WIDTH = 7


@njit
def json_lines(out, cols, ports, parts, tokens, token_len, controller_tok):
    """One JSON line per row of ``cols`` (JL_* columns: n, in_port, the packet's outputs as
    ``ports[out_start:+out_count]``, and the token indexes of its ct_state, drop reason and
    path); returns the bytes used. ``parts`` holds the constant pieces of a line
    (:data:`JSON_PARTS`); a port < 0 is written as the token ``controller_tok``."""
    pos = 0
    for i in range(cols.shape[0]):
        pos = _put_bytes(out, pos, parts[0])
        pos = _put_int(out, pos, cols[i, JL_N])
        pos = _put_bytes(out, pos, parts[1])
        pos = _put_int(out, pos, cols[i, JL_IN_PORT])
        pos = _put_bytes(out, pos, parts[2])
        start = cols[i, JL_OUT_START]
        for k in range(cols[i, JL_OUT_COUNT]):
            if k:
                pos = _put_bytes(out, pos, parts[3])
            p = ports[start + k]
            if p < 0:
                pos = _put_token(out, pos, tokens, token_len, controller_tok)
            else:
                pos = _put_int(out, pos, p)
        pos = _put_bytes(out, pos, parts[4])
        pos = _put_token(out, pos, tokens, token_len, cols[i, JL_CT])
        pos = _put_bytes(out, pos, parts[5])
        pos = _put_token(out, pos, tokens, token_len, cols[i, JL_DROP])
        pos = _put_bytes(out, pos, parts[6])
        pos = _put_token(out, pos, tokens, token_len, cols[i, JL_PATH])
        pos = _put_bytes(out, pos, parts[7])
    return pos


JSON_PARTS = ('{"n": ', ', "in_port": ', ', "out": [', ", ", '], "ct_state": ',
              ', "drop_reason": ', ', "path": ', "}\n")  # fmt: skip


def json_parts() -> tuple:
    return tuple(np.frombuffer(p.encode(), np.uint8).copy() for p in JSON_PARTS)


def json_lines_size(n_packets: int, n_ports: int, max_token: int) -> int:
    """An upper bound on the bytes :func:`json_lines` writes."""
    fixed = sum(len(p) for p in JSON_PARTS)
    return n_packets * (fixed + 2 * 20 + 3 * max_token) + n_ports * (20 + 2 + max_token)


class TokenTable:
    """JSON tokens (strings quoted and escaped as json.dumps does, or ``null``) by index."""

    def __init__(self):
        self._index: dict = {}
        self._texts: list[bytes] = []
        self.values: list = []  # the token's value (str or None), by index

    def add(self, value) -> int:
        import json

        key = ("s", value) if isinstance(value, str) else ("v", value)
        t = self._index.get(key)
        if t is None:
            t = self._index[key] = len(self._texts)
            self._texts.append(json.dumps(value).encode())
            self.values.append(value)
        return t

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        width = max((len(t) for t in self._texts), default=1)
        tokens = np.zeros((max(len(self._texts), 1), width), np.uint8)
        lens = np.zeros(max(len(self._texts), 1), np.int64)
        for i, t in enumerate(self._texts):
            tokens[i, : len(t)] = np.frombuffer(t, np.uint8)
            lens[i] = len(t)
        return tokens, lens

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def max_len(self) -> int:
        return max((len(t) for t in self._texts), default=0)
