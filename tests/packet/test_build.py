"""Frame builders: byte-for-byte against scapy, checksums verified by scapy, fragmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from ctaccel.packet import build as B
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_frame

MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def parse(frame: bytes) -> np.ndarray:
    key = np.zeros(K.KEY_WIDTH, np.int64)
    parse_frame(np.frombuffer(frame, np.uint8), 1, key)
    return key


def scapy_checksums_ok(frame: bytes) -> bool:
    """Rebuild the frame with scapy computing every checksum; equal bytes = ours were right."""
    pkt = Ether(frame)
    for layer in (IP, TCP, UDP, ICMP):
        if pkt.haslayer(layer):
            del pkt[layer].chksum
    for layer in (ICMPv6EchoRequest, ICMPv6DestUnreach):
        if pkt.haslayer(layer):
            del pkt[layer].cksum
    return bytes(pkt) == frame


flag_strings = st.text(alphabet="FSRPAUECN", max_size=4)
v4 = st.integers(0, 2**32 - 1).map(lambda v: ".".join(str((v >> s) & 255) for s in (24, 16, 8, 0)))
v6 = st.integers(0, 2**128 - 1).map(lambda v: str(__import__("ipaddress").IPv6Address(v)))


@settings(max_examples=150, deadline=None)
@given(
    v6_=st.booleans(),
    data=st.data(),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    flags=flag_strings,
    window=st.integers(0, 65535),
    payload=st.binary(max_size=40),
    wscale=st.one_of(st.none(), st.integers(0, 14)),
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    vlan=st.one_of(st.none(), st.integers(0, 4095)),
)
def test_tcp_frame_equals_scapy(v6_, data, sport, dport, seq, ack, flags, window, payload,
                                wscale, ttl, tos, vlan):  # fmt: skip
    src, dst = (data.draw(v6), data.draw(v6)) if v6_ else (data.draw(v4), data.draw(v4))
    ours = B.tcp_frame(MAC1, MAC2, src, dst, sport, dport, flags, seq, ack, payload,
                       seg=B.TcpFields(window, wscale=wscale),
                       hdr=B.HeaderFields(vlan=vlan, ttl=ttl, tos=tos))  # fmt: skip
    opts = [] if wscale is None else [("NOP", None), ("WScale", wscale)]
    l4 = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags or 0, window=window,
             options=opts)  # fmt: skip
    ip = (IPv6(src=src, dst=dst, hlim=ttl, tc=tos) if v6_
          else IP(src=src, dst=dst, ttl=ttl, tos=tos, id=0))  # fmt: skip
    l2 = Ether(src=MAC1, dst=MAC2)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    assert ours == bytes(l2 / ip / l4 / Raw(payload))


@settings(max_examples=100, deadline=None)
@given(v6_=st.booleans(), data=st.data(), sport=st.integers(0, 65535),
       dport=st.integers(0, 65535), payload=st.binary(max_size=40))  # fmt: skip
def test_udp_frame_equals_scapy(v6_, data, sport, dport, payload):
    src, dst = (data.draw(v6), data.draw(v6)) if v6_ else (data.draw(v4), data.draw(v4))
    ours = B.udp_frame(MAC1, MAC2, src, dst, sport, dport, payload)
    ip = IPv6(src=src, dst=dst) if v6_ else IP(src=src, dst=dst, id=0)
    assert ours == bytes(Ether(src=MAC1, dst=MAC2) / ip / UDP(sport=sport, dport=dport) / payload)


@settings(max_examples=100, deadline=None)
@given(v6_=st.booleans(), data=st.data(), ident=st.integers(0, 65535),
       seq=st.integers(0, 65535), payload=st.binary(max_size=40))  # fmt: skip
def test_icmp_echo_equals_scapy(v6_, data, ident, seq, payload):
    src, dst = (data.draw(v6), data.draw(v6)) if v6_ else (data.draw(v4), data.draw(v4))
    ours = B.icmp_frame(MAC1, MAC2, src, dst, id=ident, seq=seq, payload=payload)
    if v6_:
        ref = IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=ident, seq=seq, data=payload)
    else:
        ref = IP(src=src, dst=dst, id=0) / ICMP(type=8, id=ident, seq=seq) / Raw(payload)
    assert ours == bytes(Ether(src=MAC1, dst=MAC2) / ref)


def test_icmp_error_quoting_a_packet():
    inner = B.l3_of(B.tcp_frame(MAC1, MAC2, "10.0.0.1", "10.0.0.2", 1000, 80, "S", 1, 0))
    frame = B.icmp_frame(MAC2, MAC1, "10.0.0.2", "10.0.0.1", type=3, code=3, payload=inner)
    pkt = Ether(frame)
    assert pkt[ICMP].type == 3 and pkt[ICMP].code == 3
    assert scapy_checksums_ok(frame) and parse(frame)[K.PARSE_FLAGS] == 0
    inner6 = B.l3_of(B.udp_frame(MAC1, MAC2, "fd00::1", "fd00::2", 5, 6, b"x"))
    frame6 = B.icmp_frame(MAC2, MAC1, "fd00::2", "fd00::1", type=1, code=4, payload=inner6)
    assert Ether(frame6).haslayer(ICMPv6DestUnreach)
    assert scapy_checksums_ok(frame6) and parse(frame6)[K.PARSE_FLAGS] == 0


def test_arp_equals_scapy():
    ours = B.arp_frame(MAC1, "ff:ff:ff:ff:ff:ff", 1, "10.0.0.1", "10.0.0.9")
    ref = Ether(src=MAC1, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=MAC1, psrc="10.0.0.1", hwdst="00:00:00:00:00:00", pdst="10.0.0.9"
    )
    assert ours == bytes(ref)


def test_stacked_vlans_and_tpid():
    frame = B.ether(MAC1, MAC2, B.ETH_P_IP, b"", vlan=[(10, 3, B.ETH_P_8021AD), (20, 1)])
    assert frame[12:14] == b"\x88\xa8" and frame[14:16] == ((3 << 13) | 10).to_bytes(2, "big")
    assert frame[16:18] == b"\x81\x00" and frame[18:20] == ((1 << 13) | 20).to_bytes(2, "big")
    assert frame[20:22] == b"\x08\x00" and B.l3_of(frame) == b""


def test_tcp_flag_strings_and_ints():
    assert B.tcp_flag_bits("SA") == 0x12 and B.tcp_flag_bits("FA") == 0x11
    assert B.tcp_flag_bits("PA") == 0x18 and B.tcp_flag_bits("R") == 0x04
    assert B.tcp_flag_bits(0x1FF) == 0x1FF
    with pytest.raises(ValueError):
        B.tcp_flag_bits("SX")


def test_bad_checksum_options():
    frame = B.ether(MAC1, MAC2, B.ETH_P_IP,
                    B.ipv4("1.1.1.1", "2.2.2.2", 6, B.tcp(1, 2), bad_checksum=True))  # fmt: skip
    pkt = Ether(frame)
    assert pkt[IP].chksum != IP(bytes(IP(src="1.1.1.1", dst="2.2.2.2", proto=6, id=0))).chksum
    assert parse(frame)[K.PARSE_FLAGS] == K.PF_L3_BAD_CSUM
    for src, dst in (("1.1.1.1", "2.2.2.2"), ("::1", "::2")):
        frame = B.tcp_frame(MAC1, MAC2, src, dst, 1, 2, "S", hdr=B.HeaderFields(l4_checksum="bad"))
        assert not scapy_checksums_ok(frame)
        assert parse(frame)[K.PARSE_FLAGS] == K.PF_L4_BAD_CSUM
    keep = B.udp_frame(
        MAC1, MAC2, "1.1.1.1", "2.2.2.2", 1, 2, b"abc", hdr=B.HeaderFields(l4_checksum="keep")
    )
    assert Ether(keep)[UDP].chksum == 0 and parse(keep)[K.PARSE_FLAGS] == 0


def test_malformed_overrides():
    ip = B.ipv4("1.1.1.1", "2.2.2.2", 6, B.tcp(1, 2, data_offset=3), ihl=4, total_length=999)
    assert ip[0] == 0x44 and int.from_bytes(ip[2:4], "big") == 999
    assert B.tcp(1, 2, data_offset=15)[12] >> 4 == 15
    assert B.udp(1, 2, b"xy", length=3)[4:6] == b"\x00\x03"
    opts = B.ipv4("1.1.1.1", "2.2.2.2", 17, B.udp(1, 2), ihl=6, options=b"\x94\x04\x00\x00")
    assert Ether(B.ether(MAC1, MAC2, B.ETH_P_IP, opts))[IP].options[0].option == 20
    assert scapy_checksums_ok(B.ether(MAC1, MAC2, B.ETH_P_IP, opts))


def test_ipv6_extension_headers():
    payload = B.tcp(7, 8, 1, 0, "S")
    packet = B.ipv6("fd00::1", "fd00::2", 6, payload,
                    ext_headers=[B.ipv6_ext(0), B.ipv6_ext(60, b"\x01\x04" + b"\x00" * 12)])  # fmt: skip
    frame = B.ether(MAC1, MAC2, B.ETH_P_IPV6, packet)
    pkt = Ether(frame)
    assert pkt.haslayer(IPv6ExtHdrHopByHop) and pkt[TCP].dport == 8
    assert scapy_checksums_ok(frame)
    key = parse(frame)
    assert key[K.NW_PROTO] == 6 and key[K.L4_OFS] == 14 + 40 + 8 + 16 and key[K.PARSE_FLAGS] == 0


def reassemble_v4(frames: list[bytes]) -> bytes:
    parts = sorted((Ether(f)[IP].frag * 8, bytes(Ether(f)[IP].payload)) for f in frames)
    out = b""
    for offset, data in parts:
        assert offset == len(out)
        out += data
    return out


@pytest.mark.parametrize("mtu", [8, 16, 100, 512])
def test_fragment_ipv4(mtu):
    payload = bytes(range(256)) * 2
    frame = B.udp_frame(
        MAC1, MAC2, "10.0.0.1", "10.0.0.2", 5, 6, payload, hdr=B.HeaderFields(ident=77, vlan=9)
    )
    frags = B.fragment_ipv4(frame, mtu)
    whole = bytes(Ether(frame)[IP].payload)
    assert len(frags) == -(-len(whole) // mtu)
    assert reassemble_v4(frags) == whole
    for i, f in enumerate(frags):
        ip = Ether(f)[IP]
        assert ip.id == 77 and bool(ip.flags.MF) == (i < len(frags) - 1)
        key = parse(f)
        assert key[K.NW_FRAG] == (K.FRAG_ANY | (K.FRAG_LATER if i else 0))
        assert key[K.PARSE_FLAGS] == 0 and key[K.IP_ID] == 77 and key[K.VLAN_TCI] == 9 | 0x1000


def test_fragment_ipv4_header_checksums_by_scapy():
    frame = B.udp_frame(MAC1, MAC2, "10.0.0.1", "10.0.0.2", 5, 6, b"z" * 100)
    for f in B.fragment_ipv4(frame, 32):
        ip = Ether(f)[IP]
        recomputed = IP(src=ip.src, dst=ip.dst, proto=ip.proto, id=ip.id, flags=ip.flags,
                        frag=ip.frag, ttl=ip.ttl, len=ip.len)  # fmt: skip
        assert ip.chksum == IP(bytes(recomputed)).chksum


def test_fragment_ipv4_fits_is_unchanged():
    frame = B.udp_frame(MAC1, MAC2, "10.0.0.1", "10.0.0.2", 5, 6, b"z" * 10)
    assert B.fragment_ipv4(frame, 1000) == [frame]


@pytest.mark.parametrize("size", [8, 24, 64])
def test_fragment_ipv6(size):
    payload = bytes(range(200))
    frame = B.udp_frame(MAC1, MAC2, "fd00::1", "fd00::2", 5, 6, payload)
    frags = B.fragment_ipv6(frame, size, ident=0xABCDEF)
    original = bytes(Ether(frame)[IPv6].payload)
    data = b""
    for i, f in enumerate(frags):
        pkt = Ether(f)
        fh = pkt[IPv6ExtHdrFragment]
        assert fh.id == 0xABCDEF and fh.nh == 17 and fh.offset * 8 == len(data)
        assert fh.m == (i < len(frags) - 1)
        assert pkt[IPv6].plen == len(bytes(pkt[IPv6].payload))
        data += bytes(fh.payload)
        key = parse(f)
        assert key[K.NW_FRAG] == (3 if i else 1) and key[K.IP_ID] == 0xABCDEF
    assert data == original


def test_fragment_ipv6_keeps_hop_by_hop_in_front():
    packet = B.ipv6("fd00::1", "fd00::2", 17, B.udp(1, 2, b"q" * 40), ext_headers=[B.ipv6_ext(0)])
    frags = B.fragment_ipv6(B.ether(MAC1, MAC2, B.ETH_P_IPV6, packet), 16)
    for f in frags:
        pkt = Ether(f)
        assert pkt[IPv6].nh == 0 and pkt[IPv6ExtHdrHopByHop].nh == 44


def test_ipv6_fragment_option_and_addresses():
    packet = B.ipv6("fd00::1", "fd00::2", 17, b"x" * 8, fragment=(16, True, 5))
    pkt = IPv6(packet)
    assert pkt[IPv6ExtHdrFragment].offset == 2 and pkt[IPv6ExtHdrFragment].m == 1
    assert B.mac_bytes(0x020000000001) == B.mac_bytes(MAC1) == B.mac_bytes(b"\x02\0\0\0\0\x01")
    assert B.is_ipv6("::1") and not B.is_ipv6("1.2.3.4")
    with pytest.raises(ValueError):
        B.mac_bytes("02:00")
