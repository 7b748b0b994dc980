"""The compiled halves of live ports (io/afpacket.py): the kernel's ring and message layouts,
the receive passes that copy frames into a batch, and the transmit messages.

What: :func:`ring_plan` / :func:`ring_take` read a TPACKET_V2 ring (a slot marked
TP_STATUS_COPY takes, in its place, the whole frame a recvmmsg read from the socket's queue);
:func:`rx_drain` reads a TPACKET_V3 ring's blocks; :func:`mmsg_take` takes a recvmmsg's
messages. Each appends to one batch (buffer, offsets, lengths, in_ports, per-frame offload
facts ``meta``, count) and gives slots or blocks back. :func:`put_message` builds one message
of a port's ``sendmmsg`` (a GSO super-frame handed back as GSO: :func:`_as_gso`).

Design: see io/afpacket.py (offloads, VLAN tags, one compiled call per port per batch).
Header offsets are the kernel's (linux/if_packet.h, linux/virtio_net.h), read as
little-endian words from the mapped ring.

Invariants: no receive pass writes past the batch buffer (it stops before a slot or block
that would not fit); a slot or block goes back to the kernel only once its frames are
copied; frames stay in arrival order.
"""

from __future__ import annotations

import numpy as np

from ctaccel.jit import copy_bytes, njit
from ctaccel.packet.checksum import ones_fold, ones_sum, pseudo_sum_v4, pseudo_sum_v6

SOL_PACKET = 263
PACKET_AUXDATA = 8

# ring header fields (linux/if_packet.h)
TP_STATUS_KERNEL = 0
TP_STATUS_COPY = 2
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# block descriptor (tpacket_block_desc, hdr.bh1)
BD_STATUS, BD_NUM_PKTS, BD_FIRST = 8, 12, 16
# tpacket3_hdr
H3_NEXT, H3_SNAPLEN, H3_LEN, H3_STATUS, H3_MAC = 0, 12, 16, 20, 24
H3_VLAN_TCI, H3_VLAN_TPID = 32, 36
# tpacket2_hdr
H2_STATUS, H2_LEN, H2_SNAPLEN, H2_MAC, H2_VLAN_TCI, H2_VLAN_TPID = 0, 4, 8, 12, 24, 26
# the fields _copy_frame reads, per ring version: status, snaplen, mac, VLAN TCI, VLAN TPID
_V3_HDR = (H3_STATUS, H3_SNAPLEN, H3_MAC, H3_VLAN_TCI, H3_VLAN_TPID)
_V2_HDR = (H2_STATUS, H2_SNAPLEN, H2_MAC, H2_VLAN_TCI, H2_VLAN_TPID)
# a TPACKET_V2 ring's geometry (``ring_geometry``): slot size, slots per block, block size,
# slots
G2_FRAME, G2_PER_BLOCK, G2_BLOCK, G2_SLOTS = range(4)
# struct virtio_net_hdr (host byte order): flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset
VNET_LEN = 10
VNET_NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4

# recvmmsg receive: message slots (a GSO super-frame and its virtio header fit one), the
# struct mmsghdr words read back (msg_controllen, msg_len), the cmsg header before the data
SLOT = 65536 + 128
MSGS = 256
MM_CONTROLLEN, MM_LEN = 5, 7
CM_HDR = 16

# per-frame offload facts rx_drain records (columns of ``meta``)
M_GSO_TYPE, M_GSO_SIZE, M_HDR_LEN = range(3)
M_WIDTH = 3

# a receive pass's state (one array per port): the block or slot it reads next, and counters
RS_BLOCK, RS_FRAMES, RS_BYTES, RS_CSUM_DONE, RS_GSO, RS_VLAN, RS_TRUNCATED = range(7)
RS_WIDTH = 7
# a port's transmit counters
TS_FRAMES, TS_BYTES, TS_TOO_BIG, TS_ERRORS = range(4)
TS_WIDTH = 4


@njit(forceinline=True)
def _u16(a, i):
    return np.int64(a[i]) | (np.int64(a[i + 1]) << 8)


@njit(forceinline=True)
def _u32(a, i):
    return _u16(a, i) | (_u16(a, i + 2) << 16)


@njit(forceinline=True)
def _put16(a, i, v):
    a[i] = v & 0xFF
    a[i + 1] = (v >> 8) & 0xFF


@njit(forceinline=True)
def _put32(a, i, v):
    _put16(a, i, v & 0xFFFF)
    _put16(a, i + 2, (v >> 16) & 0xFFFF)


@njit
def rx_drain(ring, geometry, state, batch, port_no):
    """Copy the frames of every block the kernel has handed over, from the block ``state``
    says, into ``batch`` = (buf, offsets, lengths, in_ports, meta, count): frames go after
    ``count[0]`` frames / ``count[1]`` bytes already there. ``geometry`` = (block size,
    blocks). Returns the frames added; stops early, leaving the block for the next call,
    when the batch is full."""
    buf, offsets, lengths, in_ports, meta, count = batch
    block_size, n_blocks = geometry[0], geometry[1]
    added = 0
    while True:
        b = state[RS_BLOCK]
        base = b * block_size
        if (_u32(ring, base + BD_STATUS) & TP_STATUS_USER) == 0:
            break
        n = _u32(ring, base + BD_NUM_PKTS)
        need, at = 0, base + _u32(ring, base + BD_FIRST)
        for _k in range(n):  # room for the whole block (frames + tags), or leave it
            need += _u32(ring, at + H3_SNAPLEN) + 4
            at += _u32(ring, at + H3_NEXT)
        if count[0] + n > offsets.shape[0] or count[1] + need > buf.shape[0]:
            break
        at = base + _u32(ring, base + BD_FIRST)
        for _k in range(n):
            _copy_frame(ring, at, _V3_HDR, batch, state)
            in_ports[count[0] - 1] = port_no
            at += _u32(ring, at + H3_NEXT)
        added += n
        _put32(ring, base + BD_STATUS, TP_STATUS_KERNEL)
        state[RS_BLOCK] = (b + 1) % n_blocks
    return added


@njit(forceinline=True)
def _copy_frame(ring, at, hdr, batch, state):
    """The ring's frame whose header is at ``at`` to the end of the batch; ``hdr`` = the
    header's (status, snaplen, mac, vlan tci, vlan tpid) offsets (H3_* or H2_*)."""
    status = _u32(ring, at + hdr[0])
    tpid = _u16(ring, at + hdr[4]) if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
    tci = _u16(ring, at + hdr[3]) if status & TP_STATUS_VLAN_VALID else -1
    mac = at + _u16(ring, at + hdr[2])
    _take_frame(ring, mac, _u32(ring, at + hdr[1]), (tpid, tci), batch, state)


@njit(forceinline=True)
def _take_frame(src, mac, snap, vlan, batch, state):
    """The frame ``src[mac:mac + snap]`` (its virtio header just before it) to the end of
    the batch: its VLAN tag ``vlan`` = (tpid, tci; tci < 0: none) put back, a checksum left
    to offload completed, its GSO facts recorded."""
    buf, offsets, lengths, _in_ports, meta, count = batch
    vnet = mac - VNET_LEN
    i, pos = count[0], count[1]
    tag = 0
    if vlan[1] >= 0 and snap >= 12:
        copy_bytes(buf, pos, src, mac, 12)
        buf[pos + 12], buf[pos + 13] = vlan[0] >> 8, vlan[0] & 0xFF
        buf[pos + 14], buf[pos + 15] = vlan[1] >> 8, vlan[1] & 0xFF
        copy_bytes(buf, pos + 16, src, mac + 12, snap - 12)
        tag = 4
        state[RS_VLAN] += 1
    else:
        copy_bytes(buf, pos, src, mac, snap)
    length = snap + tag
    offsets[i], lengths[i] = pos, length
    meta[i, M_GSO_TYPE] = src[vnet + 1] & 0x7F  # the ECN bit aside
    meta[i, M_GSO_SIZE] = _u16(src, vnet + 4)
    meta[i, M_HDR_LEN] = _u16(src, vnet + 2) + tag
    if src[vnet] & VNET_NEEDS_CSUM:
        start = _u16(src, vnet + 6) + tag
        field = start + _u16(src, vnet + 8)
        if field + 2 <= length:
            # the field holds the pseudo-header sum: the sum over the range completes it
            c = (~ones_fold(ones_sum(buf, pos + start, length - start))) & 0xFFFF
            if c == 0 and field - start == 6:  # UDP: 0 would mean "no checksum"
                c = 0xFFFF
            buf[pos + field], buf[pos + field + 1] = c >> 8, c & 0xFF
            state[RS_CSUM_DONE] += 1
    if meta[i, M_GSO_TYPE] != GSO_NONE:
        state[RS_GSO] += 1
    state[RS_FRAMES] += 1
    state[RS_BYTES] += length
    count[0] += 1
    count[1] += length


@njit
def mmsg_take(area, control, msgs, received, batch, state, port_no):
    """The ``received`` messages of a recvmmsg (message k's data at ``area[k * SLOT:]``: its
    virtio header then the frame; its tpacket_auxdata in ``control[k]``) to the end of the
    batch, as rx_drain does for a ring. The caller made sure they fit."""
    for k in range(received):
        _take_message(area, control, msgs, k, batch, state, port_no)
    for k in range(received):  # the kernel wrote the control lengths: room again next call
        msgs[k, MM_CONTROLLEN] = control.shape[1]


@njit(forceinline=True)
def _take_message(area, control, msgs, k, batch, state, port_no):
    """Message ``k`` of a recvmmsg to the end of the batch (a runt is skipped)."""
    in_ports, count = batch[3], batch[5]
    size = msgs[k, MM_LEN] & 0xFFFFFFFF
    if size < VNET_LEN + 14:
        return
    tpid, tci = 0x8100, -1
    c = control[k]
    if (msgs[k, MM_CONTROLLEN] >= CM_HDR + 20 and _u32(c, 8) == SOL_PACKET
            and _u32(c, 12) == PACKET_AUXDATA):  # fmt: skip
        aux_status = _u32(c, CM_HDR)
        if aux_status & TP_STATUS_VLAN_VALID:
            tci = _u16(c, CM_HDR + 16)
            if aux_status & TP_STATUS_VLAN_TPID_VALID:
                tpid = _u16(c, CM_HDR + 18)
    _take_frame(area, k * SLOT + VNET_LEN, size - VNET_LEN, (tpid, tci), batch, state)
    in_ports[count[0] - 1] = port_no


@njit(forceinline=True)
def _slot_at(geometry, k):
    block, slot = divmod(k, geometry[G2_PER_BLOCK])
    return block * geometry[G2_BLOCK] + slot * geometry[G2_FRAME]


@njit
def ring_plan(ring, geometry, state, batch, max_copies):
    """How far the next :func:`ring_take` may go in a TPACKET_V2 ring: (slots, copies) = the
    ready slots, from the next one on, whose frames fit the batch (each frame and a VLAN tag's
    room), and how many of them came whole through the socket's queue (TP_STATUS_COPY: at most
    ``max_copies``, the messages one recvmmsg reads)."""
    offsets, buf, count = batch[1], batch[0], batch[5]
    k, frames, size = state[RS_BLOCK], count[0], count[1]
    slots = copies = 0
    while slots < geometry[G2_SLOTS]:
        at = _slot_at(geometry, k)
        status = _u32(ring, at + H2_STATUS)
        if (status & TP_STATUS_USER) == 0:
            break
        if status & TP_STATUS_COPY:
            if copies == max_copies:
                break
            need = _u32(ring, at + H2_LEN) + 4
        else:
            need = _u32(ring, at + H2_SNAPLEN) + 4
        if frames + 1 > offsets.shape[0] or size + need > buf.shape[0]:
            break
        copies += (status & TP_STATUS_COPY) != 0
        frames, size, slots = frames + 1, size + need, slots + 1
        k = (k + 1) % geometry[G2_SLOTS]
    return slots, copies


@njit
def ring_take(ring, geometry, state, batch, port_no, slots, queued):
    """The frames of the next ``slots`` ready slots of a TPACKET_V2 ring to the end of
    ``batch`` (as :func:`rx_drain`), each slot given back once copied. A slot marked
    TP_STATUS_COPY takes the next of the messages ``queued`` = (area, control, messages,
    received) that a recvmmsg read from the socket's queue, so frames stay in arrival order;
    with none left it stops there. A frame the kernel truncated and could not queue whole
    (the queue was full) is counted and dropped. Returns the frames added."""
    in_ports, count = batch[3], batch[5]
    area, control, msgs, received = queued
    used = added = 0
    for _s in range(slots):
        k = state[RS_BLOCK]
        at = _slot_at(geometry, k)
        status = _u32(ring, at + H2_STATUS)
        if status & TP_STATUS_COPY:
            if used == received:
                break
            _take_message(area, control, msgs, used, batch, state, port_no)
            used += 1
            added += 1
        elif _u32(ring, at + H2_SNAPLEN) < _u32(ring, at + H2_LEN):
            state[RS_TRUNCATED] += 1
        else:
            _copy_frame(ring, at, _V2_HDR, batch, state)
            in_ports[count[0] - 1] = port_no
            added += 1
        _put32(ring, at + H2_STATUS, TP_STATUS_KERNEL)
        state[RS_BLOCK] = (k + 1) % geometry[G2_SLOTS]
    for m in range(received):
        msgs[m, MM_CONTROLLEN] = control.shape[1]
    return added


@njit(forceinline=True)
def put_message(out, slot, m, src, which, offset, length, gso_type, gso_size):
    """Message ``m`` of port ``slot`` in ``out`` = (headers (ports, n, 16), iovecs (ports,
    2n, 2), messages (ports, n, 8) as struct mmsghdr, addresses (ports, 5): the three frame
    buffers', this port's headers', its iovecs'): the frame ``src[offset:+length]`` (``src``
    is buffer ``which``) after its virtio header (zero, or GSO for a super-frame)."""
    headers, iovecs, msgs, addr = out
    for b in range(16):
        headers[slot, m, b] = 0
    if gso_type != GSO_NONE:
        _as_gso(headers[slot, m], src, offset, length, gso_type, gso_size)
    iovecs[slot, 2 * m, 0] = addr[slot, 3] + 16 * m
    iovecs[slot, 2 * m, 1] = VNET_LEN
    iovecs[slot, 2 * m + 1, 0] = addr[slot, which] + offset
    iovecs[slot, 2 * m + 1, 1] = length
    for w in range(8):
        msgs[slot, m, w] = 0
    msgs[slot, m, 2] = addr[slot, 4] + 32 * m  # msg_iov
    msgs[slot, m, 3] = 2  # msg_iovlen


def tx_buffers(ports: int, n: int):
    """Empty message buffers for ``ports`` ports of ``n`` messages each, their addresses
    filled in but the frame buffers' (see put_message)."""
    headers = np.zeros((ports, n, 16), np.uint8)
    iovecs = np.zeros((ports, 2 * n, 2), np.int64)
    msgs = np.zeros((ports, n, 8), np.int64)
    addr = np.zeros((ports, 5), np.int64)
    addr[:, 3] = headers.ctypes.data + 16 * n * np.arange(ports)
    addr[:, 4] = iovecs.ctypes.data + 32 * n * np.arange(ports)
    return headers, iovecs, msgs, addr


@njit(forceinline=True)
def _as_gso(vnet, f, at, length, gso_type, gso_size):
    """Make the frame ``f[at:at + length]`` a GSO super-frame for the kernel to cut: its
    virtio header ``vnet`` (NEEDS_CSUM, type, size, where the L4 header and checksum are) and
    its L4 checksum field back to the pseudo-header sum of the frame as it is now."""
    l3 = 14
    ethertype = (np.int64(f[at + 12]) << 8) | f[at + 13]
    while (ethertype == 0x8100 or ethertype == 0x88A8) and l3 + 4 <= length:
        ethertype = (np.int64(f[at + l3 + 2]) << 8) | f[at + l3 + 3]
        l3 += 4
    if ethertype == 0x0800 and l3 + 20 <= length:
        l4 = l3 + (f[at + l3] & 0x0F) * 4
        proto = np.int64(f[at + l3 + 9])
        pseudo = pseudo_sum_v4(f, at + l3, proto, length - l4)
    elif ethertype == 0x86DD and l3 + 40 <= length:
        l4 = l3 + 40
        proto = np.int64(f[at + l3 + 6])
        pseudo = pseudo_sum_v6(f, at + l3, proto, length - l4)
    else:
        return
    field = 16 if proto == 6 else 6
    if (proto != 6 and proto != 17) or l4 + 20 > length:
        return
    hdr_len = l4 + ((f[at + l4 + 12] >> 4) * 4 if proto == 6 else 8)
    vnet[0] = VNET_NEEDS_CSUM
    vnet[1] = gso_type
    _put16(vnet, 2, hdr_len)
    _put16(vnet, 4, gso_size)
    _put16(vnet, 6, l4)
    _put16(vnet, 8, field)
    c = ones_fold(pseudo)
    f[at + l4 + field], f[at + l4 + field + 1] = c >> 8, c & 0xFF
