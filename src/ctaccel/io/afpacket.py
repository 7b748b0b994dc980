"""Live ports: a Linux interface as an OpenFlow port, through AF_PACKET.

What: :class:`LivePort` opens an interface for the datapath: a receive socket (recvmmsg, or
a TPACKET_V3 ring) and a transmit socket, both with virtio-net headers, the interface in
promiscuous mode, our own transmissions ignored. :func:`mmsg_take` / :func:`rx_drain`
(compiled) copy every frame received into one batch buffer (offsets, lengths, per-frame
offload facts), the ring's blocks given back; :func:`put_message` (compiled, called per frame by the datapath's transmit pass)
builds one message of the ``sendmmsg`` that LivePort.send_messages makes per port.

Design (facts measured on this kind of machine: shared/reference/linux-live.md):
- Offloads. A local stack on a veth leaves checksums to "hardware" (virtio flag NEEDS_CSUM:
  the L4 checksum field holds only the pseudo-header sum) and hands over GSO super-frames
  larger than the MTU. The receive kernel completes such checksums in the copied frame, so
  conntrack validates it like any other, and records the frame's GSO type and size. A
  super-frame goes back to the kernel as GSO again (NEEDS_CSUM, the checksum field back to
  the pseudo-header sum of the frame as it now is), so the kernel cuts it to the MTU; every
  other frame leaves with its checksums complete.
- Transmit: one ``sendmmsg`` per port per batch (libc through ctypes: Python has no binding),
  its messages built in compiled code pointing into the batch's buffers, so frames of any
  size leave in order without a copy into a ring.
- VLAN tags the kernel took off into the ring header are put back into the frame, so the
  datapath sees the frame as it was on the wire.
- Nothing here allocates per frame or calls Python per frame: one compiled call per port per
  batch each way; the caller polls the sockets and runs the loop.

Invariants: rx_drain never writes past the batch buffer (it stops before a block that would
not fit, leaving it in the ring for the next call); a block goes back to the kernel only once
all its frames are copied; the frames a send points at stay alive until sendmmsg returns.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct

import numpy as np

from ctaccel.errors import InputError
from ctaccel.jit import copy_bytes, njit
from ctaccel.packet.checksum import ones_fold, ones_sum, pseudo_sum_v4, pseudo_sum_v6

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2, TPACKET_V3 = 1, 2
ETH_P_ALL = 0x0003

# ring header fields (linux/if_packet.h)
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
# block descriptor (tpacket_block_desc, hdr.bh1)
BD_STATUS, BD_NUM_PKTS, BD_FIRST = 8, 12, 16
# tpacket3_hdr
H3_NEXT, H3_SNAPLEN, H3_LEN, H3_STATUS, H3_MAC = 0, 12, 16, 20, 24
H3_VLAN_TCI, H3_VLAN_TPID = 32, 36
# struct virtio_net_hdr (host byte order): flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset
VNET_LEN = 10
VNET_NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4

# A receive block is handed over when full or after RETIRE_MS: the latency a lone packet pays
RETIRE_MS = 1
# recvmmsg receive: message slots (a GSO super-frame and its virtio header fit one), the
# struct mmsghdr words read back (msg_controllen, msg_len), the cmsg header before the data
SLOT = 65536 + 128
MSGS = 64
MM_CONTROLLEN, MM_LEN = 5, 7
CM_HDR = 16
PACKET_AUXDATA = 8
MSG_DONTWAIT = 0x40

# per-frame offload facts rx_drain records (columns of ``meta``)
M_GSO_TYPE, M_GSO_SIZE, M_HDR_LEN = range(3)
M_WIDTH = 3

# rx_drain's state (one array per port): the block it reads next, and counters
RS_BLOCK, RS_FRAMES, RS_BYTES, RS_CSUM_DONE, RS_GSO, RS_VLAN = range(6)
RS_WIDTH = 6
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
            _copy_frame(ring, at, batch, state)
            in_ports[count[0] - 1] = port_no
            at += _u32(ring, at + H3_NEXT)
        added += n
        _put32(ring, base + BD_STATUS, TP_STATUS_KERNEL)
        state[RS_BLOCK] = (b + 1) % n_blocks
    return added


@njit(forceinline=True)
def _copy_frame(ring, at, batch, state):
    """The ring's frame whose header is at ``at`` to the end of the batch."""
    status = _u32(ring, at + H3_STATUS)
    tpid = _u16(ring, at + H3_VLAN_TPID) if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
    tci = _u16(ring, at + H3_VLAN_TCI) if status & TP_STATUS_VLAN_VALID else -1
    mac = at + _u16(ring, at + H3_MAC)
    _take_frame(ring, mac, _u32(ring, at + H3_SNAPLEN), (tpid, tci), batch, state)


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
    in_ports, count = batch[3], batch[5]
    for k in range(received):
        size = msgs[k, MM_LEN] & 0xFFFFFFFF
        if size < VNET_LEN + 14:
            continue
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
    for k in range(received):  # the kernel wrote the control lengths: room again next call
        msgs[k, MM_CONTROLLEN] = control.shape[1]


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


class LivePort:
    """One interface as a datapath port: a TPACKET_V3 receive ring and a transmit socket,
    both with virtio headers (see the module docstring). Raises InputError, one line, when
    the interface cannot be used (missing, not root, ...)."""

    BLOCK_SIZE = 1 << 18  # a GSO super-frame (64 KiB) and its headers fit a block
    BLOCKS = 64

    def __init__(self, ifname: str, port_no: int, rx: str = "mmsg"):
        if rx not in RX_MODES:
            raise InputError(f"receive mode {rx!r}: expected one of {', '.join(RX_MODES)}")
        self.ifname, self.port_no, self.rx_mode = ifname, int(port_no), rx
        self.ifindex = _ifindex(ifname)
        self.mtu = int(_sysfs(ifname, "mtu") or 1500)
        self.rx_state = np.zeros(RS_WIDTH, np.int64)
        self.tx_state = np.zeros(TS_WIDTH, np.int64)
        self.rx = self._rx_socket()
        self.tx = self._tx_socket()
        self._rx_map = None
        if rx == "ring":
            self.rx_geometry = np.array([self.BLOCK_SIZE, self.BLOCKS], np.int64)
            self._rx_map = mmap.mmap(self.rx.fileno(), self.BLOCK_SIZE * self.BLOCKS)
            self.rx_ring = np.frombuffer(self._rx_map, np.uint8)
        else:
            self._mm = _mmsg_buffers()
            self._mm_addr = self._mm[3].ctypes.data
        self._rx_fd = self.rx.fileno()
        self._tx_fd = self.tx.fileno()

    def receive(self, batch) -> int:
        """Every frame waiting (the ring's handed-over blocks, or up to MSGS messages) to the
        end of ``batch``; the frames added."""
        if self.rx_mode == "ring":
            return rx_drain(self.rx_ring, self.rx_geometry, self.rx_state, batch, self.port_no)
        area, control, _iovecs, msgs = self._mm
        got = _recvmmsg(self._rx_fd, self._mm_addr, MSGS)
        if got <= 0:
            return 0
        mmsg_take(area, control, msgs, got, batch, self.rx_state, self.port_no)
        return got

    def _rx_socket(self) -> socket.socket:
        s = _packet_socket(self.ifname, ETH_P_ALL)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            if self.rx_mode == "ring":
                s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
                frames = self.BLOCK_SIZE * self.BLOCKS // 2048
                s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                    "IIIIIII", self.BLOCK_SIZE, self.BLOCKS, 2048, frames, RETIRE_MS, 0,
                    0))  # fmt: skip
            else:
                s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            s.bind((self.ifname, ETH_P_ALL))
        except OSError as e:
            s.close()
            raise InputError(f"{self.ifname}: cannot receive: {e.strerror}") from None
        return s

    def _tx_socket(self) -> socket.socket:
        s = _packet_socket(self.ifname, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            s.bind((self.ifname, 0))
        except OSError as e:
            s.close()
            raise InputError(f"{self.ifname}: cannot transmit: {e.strerror}") from None
        return s

    def send_messages(self, msgs_addr: int, m: int) -> int:
        """sendmmsg of ``m`` messages built at ``msgs_addr`` (put_message); a message the
        kernel refuses is counted and skipped. Returns ``m``."""
        sent, errors = 0, int(self.tx_state[TS_ERRORS])
        while sent < m:
            done = _sendmmsg(self._tx_fd, msgs_addr + 64 * sent, m - sent)
            if done < 0:  # this message failed (the kernel refused it): count it, go on
                self.tx_state[TS_ERRORS] += 1
                sent += 1
            else:
                sent += done
        self.tx_state[TS_FRAMES] += m - (int(self.tx_state[TS_ERRORS]) - errors)
        return m

    def is_up(self) -> bool:
        return (_sysfs(self.ifname, "operstate") or "up") in ("up", "unknown")

    def kernel_drops(self) -> int:
        """Frames the kernel dropped for this port's receive socket (its queue or ring was
        full), since the port was opened (PACKET_STATISTICS; reading clears it, so it adds
        up here)."""
        try:
            raw = self.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            self._kernel_drops += struct.unpack_from("II", raw)[1]
        except OSError:
            pass
        return self._kernel_drops

    _kernel_drops = 0

    def counters(self) -> dict:
        r, t = self.rx_state, self.tx_state
        return {"rx_frames": int(r[RS_FRAMES]), "rx_bytes": int(r[RS_BYTES]),
                "rx_kernel_drops": self.kernel_drops(),
                "rx_checksums_completed": int(r[RS_CSUM_DONE]), "rx_gso": int(r[RS_GSO]),
                "tx_frames": int(t[TS_FRAMES]), "tx_bytes": int(t[TS_BYTES]),
                "tx_too_big": int(t[TS_TOO_BIG]), "tx_errors": int(t[TS_ERRORS])}  # fmt: skip

    def close(self) -> None:
        self.rx_ring = None
        try:
            if self._rx_map is not None:
                self._rx_map.close()
        except BufferError:
            pass  # a view is still alive somewhere; closing the socket frees the ring
        self.rx.close()
        self.tx.close()


RX_MODES = ("mmsg", "ring")


def _mmsg_buffers():
    """recvmmsg's buffers, pointing at each other: (area, control, iovecs, messages)."""
    area = np.zeros(MSGS * SLOT, np.uint8)
    control = np.zeros((MSGS, 64), np.uint8)
    iovecs = np.zeros((MSGS, 2), np.int64)
    iovecs[:, 0] = area.ctypes.data + SLOT * np.arange(MSGS)
    iovecs[:, 1] = SLOT
    msgs = np.zeros((MSGS, 8), np.int64)
    msgs[:, 2] = iovecs.ctypes.data + 16 * np.arange(MSGS)  # msg_iov
    msgs[:, 3] = 1  # msg_iovlen
    msgs[:, 4] = control.ctypes.data + control.shape[1] * np.arange(MSGS)  # msg_control
    msgs[:, MM_CONTROLLEN] = control.shape[1]
    return area, control, iovecs, msgs


_libc = None


def _c():
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        _libc.recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p)  # fmt: skip
    return _libc


def _sendmmsg(fd: int, msgs_addr: int, n: int) -> int:
    """libc's sendmmsg on ``n`` struct mmsghdr at ``msgs_addr``; -1 when the first failed."""
    return _c().sendmmsg(fd, msgs_addr, n, 0)


def _recvmmsg(fd: int, msgs_addr: int, n: int) -> int:
    """libc's recvmmsg, not waiting: the messages received (-1: none waiting)."""
    return _c().recvmmsg(fd, msgs_addr, n, MSG_DONTWAIT, None)


def check_ports(ifnames) -> None:
    """Raise InputError (one line) if an interface is missing or packet sockets are not
    allowed here: the checks a user can fail, before anything slow."""
    for ifname in ifnames:
        _ifindex(ifname)
    for ifname in ifnames[:1]:
        _packet_socket(ifname, 0).close()


def _packet_socket(ifname: str, proto: int) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    except PermissionError:
        raise InputError(f"{ifname}: opening a live port needs root (CAP_NET_RAW)") from None


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise InputError(f"{ifname}: no such network interface") from None


def _sysfs(ifname: str, attr: str) -> str | None:
    try:
        with open(os.path.join("/sys/class/net", ifname, attr)) as f:
            return f.read().strip()
    except OSError:
        return None
