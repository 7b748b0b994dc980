"""A TCP conversation helper that drives both sides of one connection with correct seq/ack.

What: ``TcpConversation``: the handshake, data, FIN/RST close and port reuse, and the
misbehaviours the tracker must catch (retransmits, out-of-window data, ACK of unsent data,
blind RST/data with a wrong seq, bad checksums, ICMP errors quoting the connection).

Design: each side remembers the next sequence number it sends; packets are generated in
arrival order, so an ACK acknowledges exactly what the peer has sent so far and any
misbehaviour is deliberate, never an accident of interleaving.

Invariants:
- Methods named after a misbehaviour (``out_of_window``, ``blind_rst``...) do not advance
  the sender's sequence number; the others advance it by the payload (+1 for SYN and FIN).
"""

from __future__ import annotations

from dataclasses import dataclass

from ctaccel.packet import build as B
from support.hosts import Host, frame_to


@dataclass
class _Side:
    host: Host
    l4port: int
    isn: int
    nxt: int = 0  # next sequence number this side sends
    last_data: bytes | None = None  # last data frame it sent (for retransmits)
    last_frame: bytes | None = None  # last frame it sent (for ICMP errors quoting it)


class TcpConversation:
    """Both ends of one TCP connection; each method returns ``(in_port, frame)``.

    Sequence numbers follow what each side has sent; an ACK acknowledges everything the peer
    sent so far (packets are generated in arrival order). Methods named after a misbehaviour
    (``out_of_window``, ``blind_rst``...) do not advance the sender's sequence."""

    def __init__(self, client: Host, server: Host, sport: int, dport: int,
                 isn_client: int = 1000, isn_server: int = 5000, window: int = 65535,
                 wscale: int | None = None, client_seen_as: Host | None = None,
                 server_seen_as: Host | None = None):  # fmt: skip
        self.window = window
        # the address one side sends to when NAT shows it the other as another host
        self.client_seen_as = client_seen_as
        self.server_seen_as = server_seen_as
        self.wscale = wscale
        self.sides = {
            True: _Side(client, sport, isn_client, isn_client),
            False: _Side(server, dport, isn_server, isn_server),
        }

    @property
    def client(self) -> Host:
        return self.sides[True].host

    @property
    def server(self) -> Host:
        return self.sides[False].host

    def segment(self, from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None,
                ack: int | None = None, advance: bool = True, l4_checksum: str = "auto",
                wscale: int | None = None) -> tuple[int, bytes]:  # fmt: skip
        """A segment from one side; by default it carries the side's next seq and ACKs all
        the peer sent, and advances the side's seq by its payload (+1 for SYN and FIN)."""
        me, peer = self.sides[from_client], self.sides[not from_client]
        seq = me.nxt if seq is None else seq
        if ack is None:
            ack = peer.nxt if "A" in flags else 0
        to = (self.server_seen_as if from_client else self.client_seen_as) or peer.host
        frame = B.tcp_frame(*frame_to(me.host, to), me.l4port, peer.l4port, flags,
                            seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, payload,
                            B.TcpFields(self.window, wscale=wscale),
                            B.HeaderFields(l4_checksum=l4_checksum))  # fmt: skip
        if advance:
            me.nxt = seq + len(payload) + ("S" in flags) + ("F" in flags)
        if payload and advance:
            me.last_data = frame
        me.last_frame = frame
        return me.host.port, frame

    # the handshake
    def syn(self, from_client: bool = True) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "S", seq=side.isn, wscale=self.wscale)

    def syn_ack(self) -> tuple[int, bytes]:
        side = self.sides[False]
        return self.segment(False, "SA", seq=side.isn, wscale=self.wscale)

    def ack(self, from_client: bool = True) -> tuple[int, bytes]:
        return self.segment(from_client, "A")

    def handshake(self) -> list[tuple[int, bytes]]:
        return [self.syn(), self.syn_ack(), self.ack()]

    # normal traffic and close
    def data(self, from_client: bool, size: int = 64, flags: str = "PA") -> tuple[int, bytes]:
        return self.segment(from_client, flags, bytes([0x61 + size % 26]) * size)

    def retransmit(self, from_client: bool) -> tuple[int, bytes]:
        side = self.sides[from_client]
        if side.last_data is None:
            return self.ack(from_client)
        side.last_frame = side.last_data
        return side.host.port, side.last_data

    def fin(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "FA")

    def fin_close(self, client_first: bool = True) -> list[tuple[int, bytes]]:
        return [self.fin(client_first), self.fin(not client_first), self.ack(client_first)]

    def rst(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "RA", advance=False)

    def restart(self, isn_client: int, isn_server: int) -> None:
        """Port reuse: the same 5-tuple starts over with new initial sequence numbers."""
        for from_client, isn in ((True, isn_client), (False, isn_server)):
            side = self.sides[from_client]
            side.isn = side.nxt = isn
            side.last_data = None

    # misbehaviour (none advances the sender)
    def out_of_window(self, from_client: bool, ahead: int = 10_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "PA", b"oow" * 8, seq=side.nxt + ahead, advance=False)

    def ack_unsent(self, from_client: bool, ahead: int = 10_000_000) -> tuple[int, bytes]:
        peer = self.sides[not from_client]
        return self.segment(from_client, "A", ack=peer.nxt + ahead, advance=False)

    def blind_rst(self, from_client: bool, off: int = 3_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "R", seq=side.nxt + off, advance=False)

    def blind_data(self, from_client: bool, behind: int = 2_000_000) -> tuple[int, bytes]:
        side = self.sides[from_client]
        return self.segment(from_client, "PA", b"spoof" * 4, seq=side.nxt - behind,
                            advance=False)  # fmt: skip

    def bad_checksum(self, from_client: bool) -> tuple[int, bytes]:
        return self.segment(from_client, "PA", b"badsum" * 3, advance=False, l4_checksum="bad")

    def icmp_error(self, about_client: bool = True, mangle: bool = False) -> tuple[int, bytes]:
        """An ICMP error from the peer of one side, quoting that side's last frame (related
        to the connection); ``mangle`` quotes other ports (unrelated: ``inv``)."""
        me, peer = self.sides[about_client], self.sides[not about_client]
        quoted = me.last_frame or self.segment(about_client, "A", advance=False)[1]
        inner = bytearray(B.l3_of(quoted))
        if mangle:
            at = 40 if me.host.v6 else 20
            inner[at : at + 2] = b"\x00\x07"
        if me.host.v6:
            frame = B.icmp_frame(*frame_to(peer.host, me.host), type=1, code=4,
                                 payload=bytes(inner))  # fmt: skip
        else:
            frame = B.icmp_frame(*frame_to(peer.host, me.host), type=3, code=3,
                                 payload=bytes(inner[:28]))  # fmt: skip
        return peer.host.port, frame
