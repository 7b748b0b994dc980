"""Live ports: a Linux interface as an OpenFlow port, through AF_PACKET.

What: :class:`LivePort` opens an interface for the datapath: a receive socket and a
transmit socket, both with virtio-net headers, the interface in promiscuous mode, our own
transmissions ignored. Three ways to receive (``RX_MODES``):
- ``ring`` (the default): a TPACKET_V2 ring, one fixed slot per frame, each frame handed over
  (and the reader woken) as soon as the kernel wrote it. The kernel copies frames into the ring
  in the sender's context, not ours. A frame too big for a slot (a GSO super-frame) comes whole
  through the socket's queue (PACKET_COPY_THRESH; its slot says TP_STATUS_COPY and holds a
  truncated copy), read with recvmmsg in the same pass (rings.ring_plan, rings.ring_take).
- ``block``: a TPACKET_V3 ring, blocks of frames handed over when full or after 1 ms (the
  fewest wake-ups under load, up to 1 ms more latency per hop): rings.rx_drain.
- ``mmsg``: recvmmsg into a buffer (each frame copied in our context): rings.mmsg_take.
Each copies every frame received into one batch buffer (offsets, lengths, per-frame offload
facts) and gives the ring's slots or blocks back; rings.put_message (called per frame by the
datapath's transmit pass) builds one message of the ``sendmmsg`` that
LivePort.send_messages makes per port. The compiled halves live in io/rings.py.

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

Invariants: no receive pass writes past the batch buffer (it stops before a slot or block
that would not fit, leaving it in the ring for the next call); a slot or block goes back to
the kernel only once its frames are copied; a frame that came through the queue is taken in
its slot's place, so frames stay in arrival order; the frames a send points at stay alive
until sendmmsg returns.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct

import numpy as np

from ctaccel.errors import InputError
from ctaccel.io.rings import (
    G2_BLOCK,
    G2_FRAME,
    G2_PER_BLOCK,
    G2_SLOTS,
    MM_CONTROLLEN,
    MSGS,
    PACKET_AUXDATA,
    RS_BYTES,
    RS_CSUM_DONE,
    RS_FRAMES,
    RS_GSO,
    RS_TRUNCATED,
    RS_WIDTH,
    SLOT,
    TS_BYTES,
    TS_ERRORS,
    TS_FRAMES,
    TS_TOO_BIG,
    TS_WIDTH,
    mmsg_take,
    ring_plan,
    ring_take,
    rx_drain,
)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_COPY_THRESH = 7
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2, TPACKET_V3 = 1, 2
ETH_P_ALL = 0x0003
# A receive block is handed over when full or after RETIRE_MS: the latency a lone packet pays
RETIRE_MS = 1
# the receive socket's queue (recvmmsg; frames too big for a ring slot): bursts of full-size
# frames, or dozens of super-frames, wait there rather than being dropped
RCVBUF = 8 << 20
SO_RCVBUFFORCE = 33
MSG_DONTWAIT = 0x40


class LivePort:
    """One interface as a datapath port: a receive socket (``rx``: one of RX_MODES, see the
    module docstring) and a transmit socket, both with virtio headers. Raises InputError, one
    line, when the interface cannot be used (missing, not root, ...)."""

    BLOCK_SIZE = 1 << 18  # "block": a GSO super-frame (64 KiB) and its headers fit a block
    BLOCKS = 64
    RING_BYTES = 8 << 20  # "ring": 4,096 slots of 2 KiB at the usual MTUs
    RING_BLOCK = 1 << 16

    def __init__(self, ifname: str, port_no: int, rx: str = "ring"):
        if rx not in RX_MODES:
            raise InputError(f"receive mode {rx!r}: expected one of {', '.join(RX_MODES)}")
        self.ifname, self.port_no, self.rx_mode = ifname, int(port_no), rx
        self.ifindex = _ifindex(ifname)
        self.mtu = int(_sysfs(ifname, "mtu") or 1500)
        self.rx_state = np.zeros(RS_WIDTH, np.int64)
        self.tx_state = np.zeros(TS_WIDTH, np.int64)
        self.rx_geometry = self._geometry()
        self.rx = self._rx_socket()
        self.tx = self._tx_socket()
        self._rx_map = None
        if rx != "mmsg":
            self._rx_map = mmap.mmap(self.rx.fileno(), self.ring_bytes())
            self.rx_ring = np.frombuffer(self._rx_map, np.uint8)
        self._mm = mmsg_buffers()  # "ring" reads its slots' whole frames with it too
        self._mm_addr = self._mm[3].ctypes.data
        self._rx_fd = self.rx.fileno()
        self._tx_fd = self.tx.fileno()

    def _geometry(self) -> np.ndarray:
        """The ring's shape: "block": (block size, blocks); "ring": ring_geometry's G2_*."""
        if self.rx_mode == "block":
            return np.array([self.BLOCK_SIZE, self.BLOCKS], np.int64)
        frame = 2048  # a slot: the ring header, the virtio header, the frame at this MTU
        while frame < self.mtu + 14 + 4 + 128:
            frame *= 2
        block = max(self.RING_BLOCK, frame)
        blocks = max(1, self.RING_BYTES // block)
        return np.array([frame, block // frame, block, blocks * (block // frame)], np.int64)

    def ring_bytes(self) -> int:
        g = self.rx_geometry
        if self.rx_mode == "block":
            return int(g[0] * g[1])
        return int(g[G2_BLOCK] * (g[G2_SLOTS] // g[G2_PER_BLOCK]))

    def batch_room(self) -> int:
        """Bytes a batch needs to take everything this port may have waiting at once."""
        return (0 if self.rx_mode == "mmsg" else self.ring_bytes()) + MSGS * SLOT

    def receive(self, batch) -> int:
        """Every frame waiting (the ring's handed-over slots or blocks, or up to MSGS
        messages) to the end of ``batch``; the frames added."""
        if self.rx_mode == "ring":
            slots, copies = ring_plan(self.rx_ring, self.rx_geometry, self.rx_state, batch, MSGS)
            if not slots:
                return 0
            got = _recvmmsg(self._rx_fd, self._mm_addr, copies) if copies else 0
            area, control, _iovecs, msgs = self._mm
            return ring_take(self.rx_ring, self.rx_geometry, self.rx_state, batch,
                             self.port_no, slots, (area, control, msgs, max(got, 0)))  # fmt: skip
        if self.rx_mode == "block":
            return rx_drain(self.rx_ring, self.rx_geometry, self.rx_state, batch, self.port_no)
        area, control, _iovecs, msgs = self._mm
        got = _recvmmsg(self._rx_fd, self._mm_addr, MSGS)
        if got <= 0:
            return 0
        mmsg_take(area, control, msgs, got, batch, self.rx_state, self.port_no)
        return got

    def _rx_socket(self) -> socket.socket:
        s = _packet_socket(self.ifname, ETH_P_ALL)
        g = self.rx_geometry
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:  # no CAP_NET_ADMIN: what net.core.rmem_max allows
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if self.rx_mode == "block":
                s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
                frames = self.BLOCK_SIZE * self.BLOCKS // 2048
                s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                    "IIIIIII", g[0], g[1], 2048, frames, RETIRE_MS, 0, 0))  # fmt: skip
            elif self.rx_mode == "ring":
                s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
                s.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
                s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                    "IIII", g[G2_BLOCK], g[G2_SLOTS] // g[G2_PER_BLOCK], g[G2_FRAME],
                    g[G2_SLOTS]))  # fmt: skip
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
                "rx_truncated": int(r[RS_TRUNCATED]),
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


RX_MODES = ("ring", "block", "mmsg")


def mmsg_buffers():
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
