"""Capture files: read classic pcap and pcapng, write classic pcap.

What: :func:`read_capture` maps a capture file into memory and returns a :class:`Capture`
(the file's bytes plus per-packet offset, captured length, original length and timestamp in
nanoseconds); :class:`PcapWriter` streams frames into a classic pcap file; :func:`write_pcap`
writes a list at once. This is the only module of the package that opens files.

Design: the file is ``np.memmap``-ed read-only and never copied; a compiled record scan
walks it twice (count, then fill the index arrays), so loading a million-packet capture costs
tens of milliseconds and no per-packet Python. Frames are views into ``Capture.data``.
pcapng is scanned block by block in the same way: section headers (either byte order),
interface descriptions (link type, snap length, ``if_tsresol``) and enhanced, simple and
obsolete packet blocks; any other block is skipped by its length.

Invariants:
- Only Ethernet (link type 1) is accepted; any other link type is an ``InputError``.
- A missing/unreadable file, an unknown magic, or a corrupt header is an ``InputError``
  whose message names the file. A last record cut short (the capture was interrupted) is
  dropped and ``Capture.truncated`` is set; it is not an error.
- ``offsets[i] + lengths[i] <= len(data)`` for every record.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ctaccel.errors import InputError
from ctaccel.jit import njit

LINKTYPE_ETHERNET = 1
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_OPB = 2  # obsolete packet block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
IF_TSRESOL = 9
MAX_INTERFACES = 4096

# Scan status codes (returned by the kernels, turned into messages here).
SCAN_OK = 0
SCAN_TRUNCATED = 1  # a last record/block cut short: dropped, not an error
SCAN_BAD_LINKTYPE = 2  # detail = the link type
SCAN_BAD_BLOCK = 3  # detail = byte offset of a corrupt pcapng block
SCAN_BAD_INTERFACE = 4  # detail = interface id referenced but not described
SCAN_TOO_MANY_INTERFACES = 5


@dataclass
class Capture:
    """A capture in memory: frame ``i`` is ``data[offsets[i] : offsets[i] + lengths[i]]``."""

    path: str
    data: np.ndarray  # uint8, the whole file (read-only memory map)
    offsets: np.ndarray  # int64[n]
    lengths: np.ndarray  # int64[n], captured length
    orig_lengths: np.ndarray  # int64[n], length on the wire
    ts_ns: np.ndarray  # int64[n], nanoseconds since the Unix epoch
    interfaces: np.ndarray  # int64[n], pcapng interface id (0 for classic pcap)
    format: str = "pcap"  # "pcap" or "pcapng"
    truncated: bool = False
    snaplen: int = 0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a uint8 view into ``data``."""
        off = int(self.offsets[i])
        return self.data[off : off + int(self.lengths[i])]

    def frame_bytes(self, i: int) -> bytes:
        return self.frame(i).tobytes()


# --- compiled scans -------------------------------------------------------------------------


@njit
def _u16(data, ofs, big):
    if big:
        return (np.int64(data[ofs]) << 8) | np.int64(data[ofs + 1])
    return (np.int64(data[ofs + 1]) << 8) | np.int64(data[ofs])


@njit
def _u32(data, ofs, big):
    if big:
        return (_u16(data, ofs, True) << 16) | _u16(data, ofs + 2, True)
    return (_u16(data, ofs + 2, False) << 16) | _u16(data, ofs, False)


@njit
def _scan_pcap(data, big, frac_to_ns, fill, offsets, lengths, orig, ts_ns, state):
    """Walk classic pcap records from byte ``state[0]`` (24: the first), at most ``state[1]``
    of them; ``state[0]`` ends on the next record. Returns (count, status)."""
    size = data.shape[0]
    pos = state[0]
    n = 0
    while pos < size and n < state[1]:
        if size - pos < 16:
            state[0] = pos
            return n, SCAN_TRUNCATED
        incl = _u32(data, pos + 8, big)
        if incl > size - pos - 16:
            state[0] = pos
            return n, SCAN_TRUNCATED
        if fill:
            offsets[n] = pos + 16
            lengths[n] = incl
            orig[n] = _u32(data, pos + 12, big)
            ts_ns[n] = _u32(data, pos, big) * 1_000_000_000 + _u32(data, pos + 4, big) * frac_to_ns
        n += 1
        pos += 16 + incl
    state[0] = pos
    return n, SCAN_OK


@njit
def _ticks_to_ns(ticks, resol):
    """Timestamp ticks to ns for an if_tsresol byte (MSB 0: 10^-v s; MSB 1: 2^-v s)."""
    if resol & 0x80:
        shift = resol & 0x7F
        if shift > 62:
            shift = 62
        secs = ticks >> shift
        frac = ticks & ((np.int64(1) << shift) - 1)
        if shift > 30:  # keep frac * 1e9 within int64
            frac >>= shift - 30
            shift = 30
        return secs * 1_000_000_000 + ((frac * 1_000_000_000) >> shift)
    power = resol
    if power <= 9:
        mult = np.int64(1)
        for _ in range(9 - power):
            mult *= 10
        return ticks * mult
    div = np.int64(1)
    for _ in range(min(power, 18) - 9):
        div *= 10
    return ticks // div


@njit
def _scan_pcapng(data, fill, offsets, lengths, orig, ts_ns, ifaces, if_link, if_snap, if_res,
                 state):  # fmt: skip
    """Walk pcapng blocks from ``state`` = [byte position, most packets, big-endian section,
    interfaces so far] (0, n, 0, 0: the start), which ends where the walk stopped. Returns
    (count, status, detail)."""
    size = data.shape[0]
    pos = state[0]
    n = 0
    big = state[2] != 0
    n_if = state[3]
    while pos < size and n < state[1]:
        if size - pos < 12:
            return n, SCAN_TRUNCATED, pos
        block_type = _u32(data, pos, big)
        if block_type == PCAPNG_SHB:
            # The byte-order magic decides how this section (this very length too) reads.
            magic_le = _u32(data, pos + 8, False)
            if magic_le == PCAPNG_BYTE_ORDER_MAGIC:
                big = False
            elif _u32(data, pos + 8, True) == PCAPNG_BYTE_ORDER_MAGIC:
                big = True
            else:
                return n, SCAN_BAD_BLOCK, pos
            n_if = 0  # interface ids are per section
        total = _u32(data, pos + 4, big)
        if total < 12 or total % 4 != 0:
            return n, SCAN_BAD_BLOCK, pos
        if total > size - pos:
            return n, SCAN_TRUNCATED, pos
        body = pos + 8
        body_len = total - 12
        if block_type == PCAPNG_IDB:
            if body_len < 8:
                return n, SCAN_BAD_BLOCK, pos
            if n_if >= MAX_INTERFACES:
                return n, SCAN_TOO_MANY_INTERFACES, pos
            if_link[n_if] = _u16(data, body, big)
            if_snap[n_if] = _u32(data, body + 4, big)
            if_res[n_if] = 6
            opt = body + 8
            end = body + body_len
            while end - opt >= 4:
                code = _u16(data, opt, big)
                length = _u16(data, opt + 2, big)
                if code == 0:  # opt_endofopt
                    break
                if length > end - opt - 4:
                    break  # a malformed option list: keep what was read
                if code == IF_TSRESOL and length >= 1:
                    if_res[n_if] = data[opt + 4]
                opt += 4 + ((length + 3) // 4) * 4
            n_if += 1
        elif block_type == PCAPNG_EPB or block_type == PCAPNG_OPB:
            if body_len < 20:
                return n, SCAN_BAD_BLOCK, pos
            if block_type == PCAPNG_EPB:
                iface = _u32(data, body, big)
            else:
                iface = _u16(data, body, big)
            if iface >= n_if:
                return n, SCAN_BAD_INTERFACE, iface
            if if_link[iface] != 1:
                return n, SCAN_BAD_LINKTYPE, if_link[iface]
            cap_len = _u32(data, body + 12, big)
            if cap_len > body_len - 20:
                return n, SCAN_BAD_BLOCK, pos
            if fill:
                ticks = (_u32(data, body + 4, big) << 32) | _u32(data, body + 8, big)
                offsets[n] = body + 20
                lengths[n] = cap_len
                orig[n] = _u32(data, body + 16, big)
                ts_ns[n] = _ticks_to_ns(ticks, np.int64(if_res[iface]))
                ifaces[n] = iface
            n += 1
        elif block_type == PCAPNG_SPB:
            if body_len < 4:
                return n, SCAN_BAD_BLOCK, pos
            if n_if == 0:
                return n, SCAN_BAD_INTERFACE, 0
            if if_link[0] != 1:
                return n, SCAN_BAD_LINKTYPE, if_link[0]
            wire_len = _u32(data, body, big)
            cap_len = min(wire_len, body_len - 4)
            if if_snap[0] > 0 and cap_len > if_snap[0]:
                cap_len = if_snap[0]
            if fill:
                offsets[n] = body + 4
                lengths[n] = cap_len
                orig[n] = wire_len
                ts_ns[n] = 0  # simple packet blocks carry no timestamp
                ifaces[n] = 0
            n += 1
        pos += total
        state[0] = pos
        state[2] = 1 if big else 0
        state[3] = n_if
    return n, SCAN_OK, 0


# --- reading --------------------------------------------------------------------------------


def _map_file(path: str) -> np.ndarray:
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "is a directory")
        if os.path.getsize(path) == 0:
            return np.zeros(0, np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    except OSError as exc:
        raise InputError(f"{path}: cannot read capture: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{path}: cannot read capture: {exc}") from None


_ALL = 1 << 62  # "no limit" for a scan's record count


def _start_state() -> np.ndarray:
    """A pcapng scan from the start: position 0, no limit, little-endian, no interfaces."""
    return np.array([0, _ALL, 0, 0], np.int64)


def _empty_index(n: int):
    return tuple(np.zeros(n, np.int64) for _ in range(5))


def read_capture(path) -> Capture:
    """Read a classic pcap (either byte order, µs or ns) or pcapng file of Ethernet frames."""
    path = os.fspath(path)
    data = _map_file(path)
    kind = _kind(path, data)
    if kind[0] == "pcapng":
        return _read_pcapng(path, data)
    return _read_pcap(path, data, kind[1], kind[2])


def _kind(path: str, data: np.ndarray) -> tuple:
    """("pcapng",) or ("pcap", big-endian, nanosecond), from the file's magic; InputError if
    neither."""
    if data.shape[0] < 4:
        raise InputError(f"{path}: not a pcap or pcapng file (only {data.shape[0]} bytes)")
    head = bytes(data[:4])
    magic_le = struct.unpack("<I", head)[0]
    magic_be = struct.unpack(">I", head)[0]
    if magic_le == PCAPNG_SHB:
        return ("pcapng",)
    for big, magic in ((False, magic_le), (True, magic_be)):
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            return ("pcap", big, magic == PCAP_MAGIC_NS)
    raise InputError(f"{path}: not a pcap or pcapng file (magic 0x{magic_be:08x})")


def _pcap_snaplen(path: str, data: np.ndarray, big: bool) -> int:
    """The classic pcap header's snap length; InputError unless the link type is Ethernet."""
    if data.shape[0] < 24:
        raise InputError(f"{path}: truncated pcap file header")
    order = ">" if big else "<"
    snaplen, linktype = struct.unpack(order + "II", bytes(data[16:24]))
    linktype &= 0xFFFF  # the upper bits may carry FCS information
    if linktype != LINKTYPE_ETHERNET:
        raise InputError(f"{path}: link type {linktype} is not Ethernet (1)")
    return snaplen


def _read_pcap(path: str, data: np.ndarray, big: bool, nanosecond: bool) -> Capture:
    snaplen = _pcap_snaplen(path, data, big)
    frac_to_ns = 1 if nanosecond else 1000
    empty = np.zeros(0, np.int64)
    n, _status = _scan_pcap(data, big, frac_to_ns, False, empty, empty, empty, empty,
                            np.array([24, _ALL], np.int64))  # fmt: skip
    offsets, lengths, orig, ts_ns, ifaces = _empty_index(n)
    n2, status = _scan_pcap(data, big, frac_to_ns, True, offsets, lengths, orig, ts_ns,
                            np.array([24, _ALL], np.int64))  # fmt: skip
    assert n2 == n
    return Capture(path, data, offsets, lengths, orig, ts_ns, ifaces, "pcap",
                   status == SCAN_TRUNCATED, snaplen)  # fmt: skip


def _read_pcapng(path: str, data: np.ndarray) -> Capture:
    if_link = np.zeros(MAX_INTERFACES, np.int64)
    if_snap = np.zeros(MAX_INTERFACES, np.int64)
    if_res = np.zeros(MAX_INTERFACES, np.int64)
    empty = np.zeros(0, np.int64)
    n, status, detail = _scan_pcapng(data, False, empty, empty, empty, empty, empty,
                                     if_link, if_snap, if_res, _start_state())  # fmt: skip
    _check_pcapng(path, status, detail)
    offsets, lengths, orig, ts_ns, ifaces = _empty_index(n)
    n2, status2, _ = _scan_pcapng(data, True, offsets, lengths, orig, ts_ns, ifaces,
                                  if_link, if_snap, if_res, _start_state())  # fmt: skip
    assert n2 == n and status2 == status
    return Capture(path, data, offsets, lengths, orig, ts_ns, ifaces, "pcapng",
                   status == SCAN_TRUNCATED, int(if_snap[0]))  # fmt: skip


def _check_pcapng(path: str, status: int, detail: int) -> None:
    """InputError for a pcapng walk that stopped on bad content (truncation is not one)."""
    if status == SCAN_BAD_LINKTYPE:
        raise InputError(f"{path}: link type {detail} is not Ethernet (1)")
    if status == SCAN_BAD_BLOCK:
        if detail == 0:
            raise InputError(f"{path}: corrupt pcapng section header")
        raise InputError(f"{path}: corrupt pcapng block at byte {detail}")
    if status == SCAN_BAD_INTERFACE:
        raise InputError(f"{path}: packet block for undescribed interface {detail}")
    if status == SCAN_TOO_MANY_INTERFACES:
        raise InputError(f"{path}: more than {MAX_INTERFACES} interfaces in one section")


class CaptureStream:
    """A capture read a chunk of records at a time, in file order, in bounded memory.

    The file is mapped like :func:`read_capture` maps it, and checked whole first (a walk that
    counts the records: a bad file is an InputError before anything is processed); then
    :meth:`next_chunk` gives the next records' offsets, lengths and timestamps, and
    :meth:`release_before` gives the pages behind the reader back to the kernel, so neither
    the index nor the mapped file grows with the capture in memory."""

    def __init__(self, path, chunk: int = 1 << 16):
        self.path = os.fspath(path)
        self._mmap = None
        self.data = _map_file(self.path)
        if self.data.shape[0]:
            self._mmap = getattr(self.data.base, "_mmap", None)
        kind = _kind(self.path, self.data)
        self.format = kind[0]
        if self.format == "pcap":
            _pcap_snaplen(self.path, self.data, kind[1])
            self._big, self._frac = kind[1], (1 if kind[2] else 1000)
        self._ifs = tuple(np.zeros(MAX_INTERFACES, np.int64) for _ in range(3))
        self.count, self.truncated = self._count(chunk)
        self._state = self._start()
        self._left = self.count

    def _start(self) -> np.ndarray:
        return np.array([24, 0], np.int64) if self.format == "pcap" else _start_state()

    def _scan(self, fill: bool, arrays, state):
        if self.format == "pcap":
            n, status = _scan_pcap(self.data, self._big, self._frac, fill, *arrays[:4], state)
            return n, status
        n, status, detail = _scan_pcapng(self.data, fill, *arrays, *self._ifs, state)
        _check_pcapng(self.path, status, detail)
        return n, status

    def _count(self, chunk: int) -> tuple[int, bool]:
        state = self._start()
        empty = np.zeros(0, np.int64)
        total, status = 0, SCAN_OK
        while True:
            state[1] = chunk
            n, status = self._scan(False, (empty,) * 5, state)
            total += n
            self.release_before(int(state[0]))
            if n < chunk:
                return total, status == SCAN_TRUNCATED

    def __len__(self) -> int:
        return self.count

    def next_chunk(self, max_n: int):
        """(offsets, lengths, ts_ns) of up to ``max_n`` next records (offsets into ``data``);
        empty arrays at the end."""
        n = min(int(max_n), self._left)
        arrays = _empty_index(n)
        self._state[1] = n
        got, _status = self._scan(True, arrays, self._state)
        assert got == n
        self._left -= n
        offsets, lengths, _orig, ts_ns, _ifaces = arrays
        return offsets, lengths, ts_ns

    def release_before(self, offset: int) -> None:
        """Give the mapped pages wholly before byte ``offset`` back to the kernel (they are
        read again from the file if touched later)."""
        if self._mmap is None or not hasattr(self._mmap, "madvise"):
            return
        end = (int(offset) // mmap.PAGESIZE) * mmap.PAGESIZE
        if end > 0:
            self._mmap.madvise(mmap.MADV_DONTNEED, 0, end)


# --- writing --------------------------------------------------------------------------------


class PcapWriter:
    """Stream frames into a classic pcap file (Ethernet link type), bounded memory.

    ``write(frame, ts_ns)`` takes bytes or a uint8 array; frames longer than ``snaplen`` are
    cut (the record keeps the original length). Use as a context manager or call close()."""

    def __init__(self, path, snaplen: int = 65535, nanosecond: bool = False):
        self.path = os.fspath(path)
        self.snaplen = int(snaplen)
        self.nanosecond = nanosecond
        self.count = 0
        try:
            self._file = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write capture: {exc.strerror}") from None
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        self._file.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, self.snaplen,
                                     LINKTYPE_ETHERNET))  # fmt: skip
        self._record = struct.Struct("<IIII")

    def write(self, frame, ts_ns: int) -> None:
        """Append one frame with its timestamp (ns since the epoch)."""
        if isinstance(frame, np.ndarray):
            frame = frame.tobytes()
        ts_ns = int(ts_ns)
        secs, frac_ns = divmod(ts_ns, 1_000_000_000)
        frac = frac_ns if self.nanosecond else frac_ns // 1000
        orig = len(frame)
        incl = min(orig, self.snaplen)
        self._file.write(self._record.pack(secs & 0xFFFFFFFF, frac, incl, orig))
        self._file.write(frame[:incl] if incl < orig else frame)
        self.count += 1

    def write_records(self, blob, n: int) -> None:
        """Append ``n`` complete records already built (io/records.pcap_records)."""
        self._file.write(blob)
        self.count += n

    def write_batch(self, data: np.ndarray, offsets, lengths, ts_ns) -> None:
        """Append many frames stored in one buffer (``data[offsets[i]:+lengths[i]]``): their
        records built in one compiled call (io/records.py), one write."""
        from ctaccel.io import records

        lengths = np.asarray(lengths, np.int64)
        blob = np.empty(records.pcap_records_size(lengths, self.snaplen), np.uint8)
        which = np.zeros(len(lengths), np.int64)
        used = records.pcap_records(blob, np.asarray(ts_ns, np.int64), which,
                                    np.asarray(offsets, np.int64), lengths,
                                    (np.ascontiguousarray(data, np.uint8),), self.snaplen,
                                    self.nanosecond)  # fmt: skip
        self.write_records(blob[:used], len(lengths))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_pcap(path, frames, ts_ns_list=None, snaplen: int = 65535,
               nanosecond: bool = False) -> None:  # fmt: skip
    """Write ``frames`` (bytes or uint8 arrays) with timestamps in ns (default 0, 1 µs, ...)."""
    frames = list(frames)
    if ts_ns_list is None:
        ts_ns_list = [i * 1000 for i in range(len(frames))]
    ts_ns_list = list(ts_ns_list)
    if len(ts_ns_list) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(ts_ns_list)} timestamps")
    with PcapWriter(path, snaplen, nanosecond) as writer:
        for frame, ts in zip(frames, ts_ns_list, strict=True):
            writer.write(frame, ts)
