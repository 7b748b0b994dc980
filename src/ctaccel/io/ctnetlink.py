"""Batched ctnetlink: the kernel's conntrack table of this network namespace, as numpy arrays.

What: :class:`CtNetlink` owns a NETLINK_NETFILTER socket and moves many entries per system
call (:class:`CtEvents` reads the kernel's NEW/UPDATE/DESTROY events in batches): :meth:`CtNetlink.create` and :meth:`CtNetlink.delete` send rows of
:class:`KernelEntries` and return the rows the kernel refused; :meth:`CtNetlink.dump` reads
the whole table into :class:`KernelEntries`; :meth:`CtNetlink.flush` empties it. The table
is that of the caller's network namespace, or of a named one (``CtNetlink("ns1")``, entered
by a short-lived thread only). The messages themselves are io/ctnetlink_codec.py's (no socket
there); its public names are re-exported here.

Design (docs/kernel-conntrack-facts.md): messages go out in chunks of at most
``chunk_bytes`` (1 MiB) per ``sendto`` and no NLM_F_ACK. nfnetlink handles every message of
one ``sendto`` in order before the call returns, and reports a failed message with an
NLMSG_ERROR carrying its ``seq`` even without NLM_F_ACK, so after each chunk the errors are
read without blocking and mapped to rows (``row = seq - seq0``). NETLINK_CAP_ACK keeps each
error to a header. A dump is one NLM_F_DUMP request received into one reused numpy buffer.
As root the buffers are forced past rmem_max/wmem_max (SO_RCVBUFFORCE/SO_SNDBUFFORCE);
otherwise chunks shrink to what the buffers allow.

Invariants: a chunk never holds more messages than the receive buffer has room for errors
(about 830 bytes of truesize each), nor more bytes than the send buffer; if errors were lost
anyway (ENOBUFS) the result carries a row -1 with errno ENOBUFS, and which rows failed is
unknown: the caller must dump. Permission and missing-support failures raise
:class:`~ctaccel.errors.InputError` saying so; other refusals are rows of the result.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

import numpy as np

from ctaccel.errors import InputError
from ctaccel.io.ctnetlink_codec import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    CT_DELETE,
    CT_NEW,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT,
    NLM_F_CREATE,
    NLM_F_EXCL,
    TCP_CONNTRACK_ESTABLISHED,
    KernelEntries,
    datagram_messages,
    dump_request,
    encode_create,
    encode_create_messages,
    encode_delete,
    encode_delete_messages,
    flush_request,
    parse_entries,
    parse_errors,
)

__all__ = [
    "AF_INET", "AF_INET6", "AF_UNSPEC", "IPS_ASSURED", "IPS_CONFIRMED", "IPS_DST_NAT",
    "IPS_SEEN_REPLY", "IPS_SRC_NAT", "IP_CT_TCP_FLAG_BE_LIBERAL", "IP_CT_TCP_FLAG_SACK_PERM",
    "IP_CT_TCP_FLAG_WINDOW_SCALE", "TCP_CONNTRACK_ESTABLISHED", "CtEvents", "CtNetlink", "KernelEntries",
    "encode_create", "encode_delete",
]  # fmt: skip

NETLINK_NETFILTER = 12
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
ERROR_TRUESIZE = 1024  # receive-buffer bytes one queued NLMSG_ERROR takes (measured ~830)
RECV_SIZE = 1 << 20  # bigger than any datagram the kernel sends (dumps: ~32 KiB)
CLONE_NEWNET = 0x40000000
_NO_SUPPORT = (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT)


def _refused(err: int, what: str) -> InputError:
    name = errno.errorcode.get(err, str(err))
    if err in (errno.EPERM, errno.EACCES):
        return InputError(f"ctnetlink {what}: permission denied ({name}): the kernel's conntrack "
                          "table needs CAP_NET_ADMIN in its network namespace (run as root)")  # fmt: skip
    if err in _NO_SUPPORT or err == errno.EINVAL:
        return InputError(f"ctnetlink {what}: the kernel refused ({name}): no conntrack netlink "
                          "support here (is nf_conntrack_netlink loaded?)")  # fmt: skip
    return InputError(f"ctnetlink {what}: {os.strerror(err)} ({name})")


def _open_socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as e:
        raise InputError(f"ctnetlink: cannot open a NETLINK_NETFILTER socket ({e.strerror}):"
                         " this kernel has no nfnetlink") from e  # fmt: skip


def _open_socket_in(netns: str) -> socket.socket:
    """A socket made in namespace ``netns`` by a short-lived thread: a network namespace
    belongs to a thread, and a socket stays in the one it was made in, so the caller's
    threads never move."""
    path = netns if "/" in netns else f"/run/netns/{netns}"
    box: dict = {}

    def enter() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
                raise InputError(f"ctnetlink: setns({path}) left this thread elsewhere")
            box["sock"] = _open_socket()
        except (OSError, InputError) as e:
            box["error"] = e

    thread = threading.Thread(target=enter, name=f"ctnetlink-{netns}")
    thread.start()
    thread.join()
    if "error" in box:
        e = box["error"]
        if isinstance(e, InputError):
            raise e
        raise InputError(f"ctnetlink: cannot enter network namespace {netns!r}: {e}") from e
    return box["sock"]


def _recv_nowait(sock: socket.socket, into, nbytes: int = 0) -> int:
    """One datagram into ``into`` without blocking: its size, 0 when nothing waits, -1 when
    the kernel dropped messages for want of room (ENOBUFS: which ones is unknown)."""
    try:
        return sock.recv_into(into, nbytes, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return 0
    except OSError as e:
        if e.errno != errno.ENOBUFS:
            raise
        return -1


class CtNetlink:
    """A NETLINK_NETFILTER socket for one namespace's conntrack table (the caller's, at
    construction). Use as a context manager, or call :meth:`close`."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 32 << 20, sndbuf: int = 32 << 20,
                 chunk_bytes: int = 1 << 20):  # fmt: skip
        """``netns``: a network namespace's name (under /run/netns) or path; None: ours."""
        sock = _open_socket() if netns is None else _open_socket_in(netns)
        self._sock = sock
        for force, plain, size in ((SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf),
                                   (SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf)):  # fmt: skip
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:  # not root: capped at rmem_max / wmem_max
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.bind((0, 0))
        self.portid = sock.getsockname()[0]  # the kernel's events name our requests by it
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.chunk_bytes = max(256, min(chunk_bytes, self.sndbuf - 64))
        self.chunk_messages = max(1, self.rcvbuf // ERROR_TRUESIZE)
        self._errbuf = bytearray(1 << 16)
        self._dumpbuf = np.empty(8 << 20, np.uint8)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> CtNetlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self, entries: KernelEntries, exclusive: bool = True) -> np.ndarray:
        """Create every row (see :func:`encode_create`); returns (row, errno) of refused rows,
        sorted by row, e.g. EEXIST (17) for an existing tuple when ``exclusive``, EBUSY (16)
        for a status without CONFIRMED, ERANGE (34) for a TCP state past SYN_SENT2."""
        buf, ends = encode_create_messages(entries, 1, exclusive)
        return self._send(buf, ends, "create")

    def delete(self, entries: KernelEntries) -> np.ndarray:
        """Delete every row by its original tuple and zone; returns (row, errno) of refused
        rows (ENOENT (2) for a tuple not in the table)."""
        buf, ends = encode_delete_messages(entries, 1)
        return self._send(buf, ends, "delete")

    def dump(self, family: int = AF_UNSPEC, zone: int | None = None) -> KernelEntries:
        """Every entry of ``family`` (AF_UNSPEC: both), or of one zone."""
        for _attempt in range(3):
            got = self._receive_dump(family, zone)
            if got is not None:
                return parse_entries(*got)
        raise InputError("ctnetlink dump: the kernel dropped replies (ENOBUFS) three times")

    def flush(self, family: int = AF_UNSPEC) -> None:
        """Delete every entry of ``family`` (AF_UNSPEC: all) and wait for the kernel's ack."""
        self._drain([], 0, 0)
        self._sock.send(flush_request(family, seq=1))
        n = self._sock.recv_into(self._errbuf)
        for _seq, err in parse_errors(self._errbuf, n):
            raise _refused(err, "flush")

    def _send(self, buf: np.ndarray, ends: np.ndarray, what: str) -> np.ndarray:
        errors: list[tuple[int, int]] = []
        self._drain([], 0, 0)  # nothing left over from an earlier call can be taken for ours
        view, first, start = memoryview(buf), 0, 0
        while first < len(ends):
            last = int(np.searchsorted(ends, start + self.chunk_bytes, side="right"))
            last = max(first + 1, min(last, first + self.chunk_messages))
            end = int(ends[last - 1])
            self._sock.sendto(view[start:end], (0, 0))
            self._drain(errors, 1, len(ends))
            first, start = last, end
        if any(err in (errno.EPERM, errno.EACCES) for _, err in errors):
            raise _refused(errno.EPERM, what)
        return np.array(sorted(errors), np.int64).reshape(-1, 2)

    def _drain(self, errors: list, seq0: int, n: int) -> None:
        """Read every queued error without blocking; rows ``seq - seq0`` in [0, n) kept."""
        lost = False
        while got := _recv_nowait(self._sock, self._errbuf):
            if got < 0:
                lost = True
                continue
            for seq, err in parse_errors(self._errbuf, got):
                if 0 <= seq - seq0 < n:
                    errors.append((seq - seq0, err))
        if lost and n:
            errors.append((-1, errno.ENOBUFS))

    def _receive_dump(self, family: int, zone: int | None):
        """(buffer, message offsets) of one whole dump, or None if replies were dropped."""
        self._drain([], 0, 0)
        self._seq += 1
        self._sock.send(dump_request(family, self._seq, zone))
        buf, pos, parts = self._dumpbuf, 0, []
        while True:
            if len(buf) - pos < RECV_SIZE:
                grown = np.empty(2 * len(buf), np.uint8)
                grown[:pos] = buf[:pos]
                buf = self._dumpbuf = grown
            try:
                n = self._sock.recv_into(memoryview(buf)[pos:], RECV_SIZE)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                self._finish_dump()
                return None
            offs, end = datagram_messages(buf, pos, n)
            parts.append(offs)
            pos = (pos + n + 3) & ~3  # every datagram 4-aligned: the parser reads words
            if end == -1:
                break
            if end > 0:
                raise _refused(end, "dump")
        offs = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return buf[:pos], offs

    def _finish_dump(self) -> None:
        """Read what is left of an interrupted dump so the socket is clean again."""
        for _ in range(1 << 16):
            try:
                n = self._sock.recv_into(self._errbuf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                continue
            if datagram_messages(np.frombuffer(self._errbuf, np.uint8), 0, n)[1]:
                return


NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
NETLINK_ADD_MEMBERSHIP = 1
EVENT_TYPES = ("new", "update", "destroy")


class CtEvents:
    """The kernel's conntrack events (NEW, UPDATE, DESTROY) of one namespace, read in batches.

    ``fileno()`` for poll; :meth:`read` takes every event queued without blocking and returns
    them as KernelEntries per kind with the sender's netlink port id (0: the kernel itself,
    e.g. traffic or a timeout; else the ctnetlink socket whose request caused it), and whether
    events were lost (ENOBUFS: the queue overflowed; the caller must dump to resynchronise)."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 64 << 20):
        sock = _open_socket() if netns is None else _open_socket_in(netns)
        self._sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
        for group in (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE,
                      NFNLGRP_CONNTRACK_DESTROY):  # fmt: skip
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        sock.setblocking(False)
        self._buf = np.empty(4 << 20, np.uint8)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self, max_bytes: int = 64 << 20):
        """({"new"|"update"|"destroy": (KernelEntries, port ids)}, lost)."""
        buf, pos, parts, lost = self._buf, 0, [], False
        while pos < max_bytes:
            if len(buf) - pos < RECV_SIZE:
                if len(buf) * 2 > max_bytes + RECV_SIZE:
                    break
                grown = np.empty(2 * len(buf), np.uint8)
                grown[:pos] = buf[:pos]
                buf = self._buf = grown
            n = _recv_nowait(self._sock, memoryview(buf)[pos:], RECV_SIZE)
            if n == 0:
                break
            if n < 0:
                lost = True
                continue
            parts.append(datagram_messages(buf, pos, n, (CT_NEW, CT_DELETE))[0])
            pos = (pos + n + 3) & ~3  # every datagram 4-aligned: the parser reads words
        offs = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        words = buf[: len(buf) // 4 * 4].view("<u4")
        head = words[(offs + 4) >> 2]  # type (low 16 bits) and flags (high 16)
        new = ((head >> 16) & (NLM_F_CREATE | NLM_F_EXCL)) != 0
        kind = np.where((head & 0xFFFF) == CT_DELETE, 2, np.where(new, 0, 1))
        out = {}
        for k, name in enumerate(EVENT_TYPES):
            sel = offs[kind == k]
            out[name] = (parse_entries(buf, sel), words[(sel + 12) >> 2].astype(np.int64))
        return out, lost
