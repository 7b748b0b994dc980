"""pcap / pcapng reading and pcap writing: round trips with scapy, hand-made pcapng, errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, rdpcap, wrpcap, wrpcapng
from scapy.utils import PcapWriter as ScapyPcapWriter

from ctaccel.errors import InputError
from ctaccel.io.pcap import PcapWriter, read_capture, write_pcap


def sample_packets(n: int = 6):
    pkts = []
    for i in range(n):
        p = (
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / UDP(sport=1000 + i, dport=53)
            / Raw(bytes([i]) * (i * 7))
        )
        p.time = 1_700_000_000 + i * 0.25 + 0.000123
        pkts.append(p)
    return pkts


def assert_matches(cap, pkts, ts_ns=None):
    assert len(cap) == len(pkts)
    for i, p in enumerate(pkts):
        assert cap.frame_bytes(i) == bytes(p)
        assert cap.orig_lengths[i] == len(bytes(p))
    if ts_ns is not None:
        assert list(cap.ts_ns) == ts_ns


def expected_ns(pkts, resolution_ns=1000):
    return [int(round(float(p.time) * 1e9 / resolution_ns)) * resolution_ns for p in pkts]


# --- reading what scapy wrote ------------------------------------------------------------------


def test_read_scapy_pcap_microseconds(tmp_path):
    pkts = sample_packets()
    wrpcap(str(tmp_path / "a.pcap"), pkts)
    cap = read_capture(tmp_path / "a.pcap")
    assert cap.format == "pcap" and not cap.truncated
    assert_matches(cap, pkts, expected_ns(pkts))


@pytest.mark.parametrize("endianness", ["<", ">"])
def test_read_scapy_pcap_nanoseconds_both_byte_orders(tmp_path, endianness):
    pkts = sample_packets()
    path = str(tmp_path / "n.pcap")
    with ScapyPcapWriter(path, nano=True, endianness=endianness, linktype=1) as w:
        for p in pkts:
            w.write(p)
    cap = read_capture(path)
    assert_matches(cap, pkts)
    for got, p in zip(cap.ts_ns, pkts, strict=True):
        assert abs(int(got) - float(p.time) * 1e9) < 1000  # float time: sub-µs rounding


def test_read_scapy_pcapng(tmp_path):
    pkts = sample_packets()
    wrpcapng(str(tmp_path / "a.pcapng"), pkts)
    cap = read_capture(str(tmp_path / "a.pcapng"))
    assert cap.format == "pcapng"
    assert_matches(cap, pkts, expected_ns(pkts))


def test_read_scapy_pcapng_writer_streaming(tmp_path):
    pkts = sample_packets(3)
    path = str(tmp_path / "s.pcapng")
    with PcapNgWriter(path) as w:
        for p in pkts:
            w.write(p)
    assert_matches(read_capture(path), pkts)


# --- hand-made pcapng: sections, interfaces, resolutions, block kinds ------------------------


def block(order: str, btype: int, body: bytes) -> bytes:
    body = body + b"\x00" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int = 1, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(order + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
        opts += struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, iface: int, ticks: int, data: bytes, orig: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if orig is None else orig)  # fmt: skip
    return block(order, 6, head + data)


def spb(order: str, data: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data)) + data)


def test_hand_made_pcapng(tmp_path):
    f = [bytes(p) for p in sample_packets(6)]
    content = (
        shb("<")
        + idb("<")  # default resolution: µs
        + idb("<", tsresol=9)  # ns
        + idb("<", tsresol=0x80 | 10)  # 2^-10 s
        + epb("<", 0, 1_700_000_000_000_001, f[0])
        + block("<", 0x0BAD, b"unknown block, skipped")
        + epb("<", 1, 1_700_000_000_123_456_789, f[1], orig=1500)
        + epb("<", 2, (5 << 10) | 512, f[2])  # 5.5 s
        + spb("<", f[3])
        + shb(">")  # a new section in the other byte order: interfaces restart at 0
        + idb(">", tsresol=3)  # ms
        + epb(">", 0, 42, f[4])
        + epb(">", 0, 43, f[5])
    )
    path = tmp_path / "h.pcapng"
    path.write_bytes(content)
    cap = read_capture(path)
    assert [cap.frame_bytes(i) for i in range(len(cap))] == f
    assert list(cap.ts_ns) == [1_700_000_000_000_001_000, 1_700_000_000_123_456_789,
                               5_500_000_000, 0, 42_000_000, 43_000_000]  # fmt: skip
    assert list(cap.orig_lengths) == [len(f[0]), 1500, len(f[2]), len(f[3]), len(f[4]), len(f[5])]
    assert list(cap.interfaces) == [0, 1, 2, 0, 0, 0]
    # scapy agrees on the enhanced packet blocks and their timestamps (it reads a simple
    # packet block of an interface with snaplen 0 as empty; the spec says 0 = no limit).
    ref = rdpcap(str(path))
    assert len(ref) == 6 and [bytes(ref[i]) for i in (0, 1, 2, 4, 5)] == [
        f[i] for i in (0, 1, 2, 4, 5)
    ]
    assert abs(float(ref[1].time) - 1_700_000_000.123456789) < 1e-6


def test_pcapng_non_ethernet_interface_is_an_error(tmp_path):
    path = tmp_path / "raw.pcapng"
    path.write_bytes(shb("<") + idb("<", linktype=101) + epb("<", 0, 0, b"\x45" + b"\x00" * 19))
    with pytest.raises(InputError, match="raw.pcapng.*link type 101"):
        read_capture(path)


def test_pcapng_packet_for_unknown_interface(tmp_path):
    path = tmp_path / "noif.pcapng"
    path.write_bytes(shb("<") + epb("<", 3, 0, b"\x00" * 60))
    with pytest.raises(InputError, match="noif.pcapng"):
        read_capture(path)


def test_pcapng_truncated_last_block(tmp_path):
    f = [bytes(p) for p in sample_packets(3)]
    content = shb("<") + idb("<") + b"".join(epb("<", 0, i, x) for i, x in enumerate(f))
    for cut in (1, 7, 20, 40):
        path = tmp_path / f"t{cut}.pcapng"
        path.write_bytes(content[:-cut])
        cap = read_capture(path)
        assert cap.truncated and len(cap) == 2
        assert [cap.frame_bytes(i) for i in range(2)] == f[:2]


# --- writing, read back by scapy and by us ------------------------------------------------------


@pytest.mark.parametrize("nanosecond", [False, True])
def test_writer_round_trip_with_scapy(tmp_path, nanosecond):
    pkts = sample_packets()
    ts = [1_700_000_000_000_000_000 + i * 1_234_567_891 for i in range(len(pkts))]
    path = tmp_path / "w.pcap"
    with PcapWriter(path, nanosecond=nanosecond) as w:
        for p, t in zip(pkts, ts, strict=True):
            w.write(np.frombuffer(bytes(p), np.uint8) if t % 2 else bytes(p), t)
    ref = rdpcap(str(path))
    assert [bytes(p) for p in ref] == [bytes(p) for p in pkts]
    unit = 1 if nanosecond else 1000
    want = [t // unit * unit for t in ts]
    assert [int(p.time * 10**9 / unit) * unit for p in ref] == pytest.approx(want, abs=unit)
    cap = read_capture(path)
    assert list(cap.ts_ns) == want
    assert_matches(cap, pkts)


def test_write_pcap_snaplen_cuts_frames(tmp_path):
    frames = [b"\x01" * 100, b"\x02" * 10]
    write_pcap(tmp_path / "s.pcap", frames, [0, 5], snaplen=64)
    cap = read_capture(tmp_path / "s.pcap")
    assert list(cap.lengths) == [64, 10] and list(cap.orig_lengths) == [100, 10]
    assert cap.frame_bytes(0) == b"\x01" * 64 and list(cap.ts_ns) == [0, 0]  # 5 ns at µs resolution
    assert cap.snaplen == 64


def test_write_batch_and_empty_capture(tmp_path):
    buf = np.frombuffer(b"abcdefghij", np.uint8)
    with PcapWriter(tmp_path / "b.pcap", nanosecond=True) as w:
        w.write_batch(buf, [0, 3], [3, 7], [10, 20])
    cap = read_capture(tmp_path / "b.pcap")
    assert [cap.frame_bytes(i) for i in range(2)] == [b"abc", b"defghij"]
    assert list(cap.ts_ns) == [10, 20]
    write_pcap(tmp_path / "e.pcap", [], [])
    empty = read_capture(tmp_path / "e.pcap")
    assert len(empty) == 0 and not empty.truncated


def test_truncated_pcap_records(tmp_path):
    pkts = sample_packets(4)
    wrpcap(str(tmp_path / "full.pcap"), pkts)
    content = (tmp_path / "full.pcap").read_bytes()
    last_len = 16 + len(bytes(pkts[-1]))
    for cut in (1, last_len - 16, last_len - 1, last_len - 15):
        (tmp_path / "cut.pcap").write_bytes(content[:-cut])
        cap = read_capture(tmp_path / "cut.pcap")
        assert cap.truncated and len(cap) == 3
        assert_matches(cap, pkts[:3])
    (tmp_path / "cut.pcap").write_bytes(content[:-last_len])
    cap = read_capture(tmp_path / "cut.pcap")
    assert not cap.truncated and len(cap) == 3


# --- errors -------------------------------------------------------------------------------------


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.pcap"):
        read_capture(tmp_path / "nope.pcap")
    with pytest.raises(InputError, match="dir"):
        (tmp_path / "dir").mkdir()
        read_capture(tmp_path / "dir")
    for name, content in [("empty.pcap", b""), ("short.pcap", b"\xd4\xc3"),
                          ("text.pcap", b"hello world, not a capture"),
                          ("hdr.pcap", b"\xd4\xc3\xb2\xa1" + b"\x00" * 10)]:  # fmt: skip
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=name.replace(".", r"\.")) as info:
            read_capture(tmp_path / name)
        assert "\n" not in str(info.value)


def test_non_ethernet_pcap_is_an_error(tmp_path):
    wrpcap(str(tmp_path / "raw.pcap"), [IP(dst="1.2.3.4")], linktype=101)
    with pytest.raises(InputError, match="link type 101"):
        read_capture(tmp_path / "raw.pcap")


def test_large_capture_loads_fast(tmp_path):
    import time

    frame = bytes(sample_packets(1)[0])
    n = 200_000
    record = struct.pack("<IIII", 1, 2, len(frame), len(frame)) + frame
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    (tmp_path / "big.pcap").write_bytes(header + record * n)
    read_capture(tmp_path / "big.pcap")  # warm-up (compilation)
    start = time.perf_counter()
    cap = read_capture(tmp_path / "big.pcap")
    elapsed = time.perf_counter() - start
    assert len(cap) == n and cap.frame_bytes(n - 1) == frame and cap.ts_ns[5] == 1_000_002_000
    assert elapsed < 1.0, elapsed
