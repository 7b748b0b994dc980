"""A batch's outputs as bytes in one compiled call: every output frame's pcap record, grouped by
port, and the batch's ``packets.jsonl`` lines.

What: :func:`emit_batch` walks a batch's packets once to size their outputs (assigning a
region of one buffer to each output port, in the order ports first appear) and once to write
them: the pcap records of each port's frames, in packet order, into that port's region; one
JSON line per packet (io/records.json_line); each packet's output ports, in order, into one
flat array (for packets.parquet); and the running tallies (frames out, frames to the
controller, packets per drop-reason and per path token). The caller then makes one write per
port and one for the lines.

Design: the packets' own values come as one table (``PK_*`` columns) the caller fills with
whole-array operations: input port, timestamp, the token of its ct_state, drop reason and
path, and where its outputs are when the reference engine produced them (fragments: their
frames in a third buffer). The engine's outputs are read from its BatchResult arrays as they
are: ``out_ports[out_start:+n]``, each frame the received one or, where ``out_fofs`` says so,
its rewritten copy. Ports map to regions through ``portmap`` (index port + 1, so the
controller's -1 fits), kept from batch to batch.

Invariants: the first pass changes nothing but the port map and the region sizes, so a call
that finds the pcap buffer too small (returns NEED_ROOM, ``tally[T_PCAP_NEED]`` says how
much) can be repeated once the caller has grown it; the JSON buffer is the caller's to size
(io/records.json_lines_size). Nothing allocates but one 7-cell row.
"""

from __future__ import annotations

import numpy as np

from ctaccel.datapath import layout as L
from ctaccel.io.records import JL_WIDTH, PCAP_RECORD_HEADER, json_line, pcap_record
from ctaccel.jit import njit

# the per-packet table the caller fills (PK_COUNT is written by emit_batch)
PK_IN_PORT, PK_TS, PK_CT, PK_DROP, PK_PATH, PK_SLOW_START, PK_SLOW_COUNT, PK_COUNT = range(8)
PK_WIDTH = 8

# tally cells: T_SLOTS and the counts from T_FRAMES_OUT on run over the whole replay
T_SLOTS = 0  # port regions assigned so far
T_PCAP_NEED = 1  # bytes this batch's pcap records need
T_JSON_USED = 2  # bytes of this batch's lines
T_OUTPUTS = 3  # this batch's outputs (entries of ``flat``)
T_FRAMES_OUT = 4  # frames sent to ports (not the controller)
T_TO_CONTROLLER = 5
T_WIDTH = 6

# rows of ``slots`` (one column per port region)
SL_PORT, SL_BYTES, SL_RECORDS, SL_START = range(4)
SL_ROWS = 4
PORTS = 1 << 16  # port numbers are 16 bits; portmap has one more cell, for the controller

OK = 0
NEED_ROOM = 1

CONTROLLER_PORT = -1  # as in the engine's output-port arrays


# the sink's members, by position (emit_batch unpacks them in this order)
S_PORTMAP, S_SLOTS, S_PCAP, S_JSON, S_FLAT, S_TALLY, S_TOKENS = range(7)


def new_sink(pcap_bytes: int = 1 << 20, json_bytes: int = 1 << 20, tokens: int = 1 << 13):
    """The arrays emit_batch writes into, kept from batch to batch: (portmap, slots,
    pcap_out, json_out, flat, tally, token_tally)."""
    portmap = np.full(PORTS + 1, -1, np.int64)
    slots = np.zeros((SL_ROWS, PORTS + 1), np.int64)
    return [portmap, slots, np.empty(pcap_bytes, np.uint8), np.empty(json_bytes, np.uint8),
            np.empty(1 << 14, np.int64), np.zeros(T_WIDTH, np.int64),
            np.zeros((2, tokens), np.int64)]  # fmt: skip


@njit(_nrt=True)  # allocates its working row
def emit_batch(frames, results, slow, pk, text, sink):
    """Write one batch's outputs (see the module docstring). ``frames`` = (buf, offsets,
    lengths, rewritten frames, the reference engine's frames); ``results`` = (res, out_ports,
    out_fofs and out_flen: empty when no frame was rewritten); ``slow`` = (port, offset, length) of the
    reference engine's outputs; ``pk`` the PK_* table; ``text`` = ((token table, tail cache) as
    io/records.json_line takes them, (first packet number, write lines 0/1, snaplen,
    nanosecond 0/1));
    ``sink`` from :func:`new_sink`. Returns OK or NEED_ROOM."""
    ((tokens, token_ofs, token_len), (tail_key, tail_len, tail_bytes)), opts = text
    first_n, want_json, snaplen, nanosecond = opts[0], opts[1], opts[2], opts[3]
    portmap, slots, pcap_out, json_out, flat, tally, token_tally = sink
    buf, offsets, lengths, fbuf, extra = frames
    res, out_ports, out_fofs, out_flen = results
    s_port, s_off, s_len = slow
    rewritable = out_fofs.shape[0] > 0
    n = pk.shape[0]
    n_slots = tally[T_SLOTS]
    for s in range(n_slots):
        slots[SL_BYTES, s] = 0
        slots[SL_RECORDS, s] = 0
    # pass 1: each packet's outputs (in ``flat``), each port's region
    m = 0
    for i in range(n):
        from_slow = pk[i, PK_SLOW_COUNT] >= 0
        count = pk[i, PK_SLOW_COUNT] if from_slow else res[i, L.R_NOUT]
        pk[i, PK_COUNT] = count
        for k in range(count):
            if from_slow:
                port, length = s_port[pk[i, PK_SLOW_START] + k], s_len[pk[i, PK_SLOW_START] + k]
            else:
                idx = res[i, L.R_OUT_START] + k
                port, length = out_ports[idx], lengths[i]
                if res[i, L.R_REWRITTEN] != 0 and rewritable and out_fofs[idx] >= 0:
                    length = out_flen[idx]
            flat[m] = port
            m += 1
            s = portmap[port + 1]
            if s < 0:
                s = portmap[port + 1] = n_slots
                slots[SL_PORT, s] = port
                slots[SL_BYTES, s] = 0
                slots[SL_RECORDS, s] = 0
                n_slots += 1
            slots[SL_BYTES, s] += PCAP_RECORD_HEADER + min(length, snaplen)
            slots[SL_RECORDS, s] += 1
    tally[T_SLOTS] = n_slots
    need = 0
    for s in range(n_slots):
        slots[SL_START, s] = need
        need += slots[SL_BYTES, s]
    tally[T_PCAP_NEED] = need
    tally[T_OUTPUTS] = m
    if need > pcap_out.shape[0]:
        return NEED_ROOM
    # pass 2: the records, the lines and the tallies
    row = np.empty(JL_WIDTH, np.int64)
    pos = 0
    m = 0
    for i in range(n):
        count = pk[i, PK_COUNT]
        ts = pk[i, PK_TS]
        for k in range(count):
            port = flat[m + k]
            at = slots[SL_START, portmap[port + 1]]
            if pk[i, PK_SLOW_COUNT] >= 0:
                j = pk[i, PK_SLOW_START] + k
                at = pcap_record(pcap_out, at, ts, extra, s_off[j], s_len[j], snaplen, nanosecond)
            else:
                idx = res[i, L.R_OUT_START] + k
                if res[i, L.R_REWRITTEN] != 0 and rewritable and out_fofs[idx] >= 0:
                    at = pcap_record(pcap_out, at, ts, fbuf, out_fofs[idx], out_flen[idx],
                                     snaplen, nanosecond)  # fmt: skip
                else:
                    at = pcap_record(pcap_out, at, ts, buf, offsets[i], lengths[i], snaplen,
                                     nanosecond)  # fmt: skip
            slots[SL_START, portmap[port + 1]] = at
            if port == CONTROLLER_PORT:
                tally[T_TO_CONTROLLER] += 1
            else:
                tally[T_FRAMES_OUT] += 1
        token_tally[0, pk[i, PK_DROP]] += 1
        token_tally[1, pk[i, PK_PATH]] += 1
        if want_json:
            row[0], row[1], row[2], row[3] = first_n + i, pk[i, PK_IN_PORT], m, count
            row[4], row[5], row[6] = pk[i, PK_CT], pk[i, PK_DROP], pk[i, PK_PATH]
            pos = json_line(json_out, pos, row, flat, tokens, token_ofs, token_len, tail_key,
                            tail_len, tail_bytes)  # fmt: skip
        m += count
    for s in range(n_slots):  # back to each region's start
        slots[SL_START, s] -= slots[SL_BYTES, s]
    tally[T_JSON_USED] = pos
    return OK
