"""The talk's workloads (bench/workloads.py) and ``ctaccel gen``.

The captures are checked three independent ways: our parser (no PF_* error flags, so the
IP and TCP checksums verify), scapy (recomputes the checksums itself), and the reference
engine with the generated firewall rules (every handshake and data packet accepted, so
sequence and acknowledgement numbers stay in window; B's retransmitted SYNs are NEW).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from ctaccel.bench import workloads as W
from ctaccel.bench.gen_cli import gen
from ctaccel.bench.templates import template_rows
from ctaccel.datapath.reference import ReferenceEngine
from ctaccel.errors import CtaccelError
from ctaccel.io.pcap import read_capture
from ctaccel.ofproto.rules import load_flows
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_batch

FLOWS = 50  # small enough for the reference engine, more than one rx batch (32)


def keys_of(capture) -> np.ndarray:
    n = len(capture)
    keys = np.zeros((n, K.KEY_WIDTH), np.int64)
    parse_batch(capture.data, capture.offsets, capture.lengths, np.ones(n, np.int64), keys)
    return keys


def replay(workload, rules_path=None) -> list:
    engine = ReferenceEngine(load_flows(rules_path or workload.flows_path))
    capture = read_capture(workload.pcap_path)
    return [
        engine.process(capture.frame(i), W.IN_PORT, int(capture.ts_ns[i]) // 1_000_000)
        for i in range(len(capture))
    ]


@pytest.fixture(scope="module")
def small_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("a")
    return W.generate("A", flows=FLOWS, packets=3 * FLOWS + 2 * FLOWS * 6 + 17, out_dir=out)


@pytest.fixture(scope="module")
def small_b(tmp_path_factory):
    out = tmp_path_factory.mktemp("b")
    return W.generate("B", flows=FLOWS, packets=3 * FLOWS + 3 * FLOWS * 8, out_dir=out)


# --- determinism and counts -----------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = W.generate("B", flows=40, packets=500, seed=7, out_dir=tmp_path / "1")
    again = W.generate("B", flows=40, packets=500, seed=7, out_dir=tmp_path / "2")
    other = W.generate("B", flows=40, packets=500, seed=8, out_dir=tmp_path / "3")
    assert first.pcap_path.read_bytes() == again.pcap_path.read_bytes()
    assert first.flows_path.read_bytes() == again.flows_path.read_bytes()
    assert first.pcap_path.read_bytes() != other.pcap_path.read_bytes()
    assert len(first.pcap_path.read_bytes()) == len(other.pcap_path.read_bytes())


def test_packet_count_is_exact_including_a_partial_round(small_a):
    capture = read_capture(small_a.pcap_path)
    assert len(capture) == small_a.packets == 3 * FLOWS + 2 * FLOWS * 6 + 17
    assert small_a.rounds == 6
    assert small_a.flows == small_a.established_flows == FLOWS
    assert small_a.unidirectional_flows == 0
    assert small_a.expected_new == FLOWS  # one SYN per connection
    assert np.all(np.diff(capture.ts_ns) > 0)


def test_default_packet_count_is_about_a_million_in_whole_rounds(tmp_path):
    w = W.generate("A", flows=1000, out_dir=tmp_path)
    round_len = 2 * 1000
    assert (w.packets - 3 * 1000) % round_len == 0
    assert abs(w.packets - 1_000_000) <= round_len / 2
    assert len(read_capture(w.pcap_path)) == w.packets


def test_too_few_packets_for_the_handshakes_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(CtaccelError, match="handshake"):
        W.generate("A", flows=100, packets=299, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "C"}, "A or B"),
        ({"flows": 0}, "flows"),
        ({"frame_size": 63}, "frame size"),
        ({"frame_size": 64, "ipv6": True}, "IPv6"),
        ({"kind": "A", "new_fraction": 0.5}, "workload B only"),
        ({"kind": "B", "new_fraction": 1.0}, "new_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_ctaccel_errors(tmp_path, kwargs, message):
    args = {"flows": 10, "packets": 100, "out_dir": tmp_path} | kwargs
    with pytest.raises(CtaccelError, match=message):
        W.generate(**args)


# --- frames ---------------------------------------------------------------------------------


def test_every_frame_parses_without_error_flags(small_b):
    capture = read_capture(small_b.pcap_path)
    keys = keys_of(capture)
    assert np.all(keys[:, K.PARSE_FLAGS] == 0)
    assert np.all(keys[:, K.DL_TYPE] == K.ETH_TYPE_IP)
    assert np.all(keys[:, K.NW_PROTO] == K.IPPROTO_TCP)
    assert np.all(capture.lengths == 60)
    # handshake segments carry no data (padding), data segments fill the 60 bytes
    flags = keys[:, K.TCP_FLAGS]
    assert set(np.unique(flags)) == {0x02, 0x12, 0x10, 0x18}
    assert np.all(keys[flags == 0x18, K.L4_LEN] == 20 + 6)
    assert np.all(keys[flags != 0x18, K.L4_LEN] == 20)


def test_checksums_agree_with_scapy(small_b):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    capture = read_capture(small_b.pcap_path)
    for i in range(0, len(capture), 37):
        frame = capture.frame_bytes(i)
        received = Ether(frame)
        rebuilt = received.copy()
        del rebuilt[IP].chksum, rebuilt[TCP].chksum
        rebuilt = Ether(bytes(rebuilt))
        assert rebuilt[IP].chksum == received[IP].chksum, i
        assert rebuilt[TCP].chksum == received[TCP].chksum, i


def test_larger_frame_size_carries_more_payload(tmp_path):
    w = W.generate("A", flows=40, packets=300, frame_size=128, out_dir=tmp_path)
    capture = read_capture(w.pcap_path)
    keys = keys_of(capture)
    assert np.all(capture.lengths == 124)
    assert np.all(keys[:, K.PARSE_FLAGS] == 0)
    data = keys[:, K.TCP_FLAGS] == 0x18
    assert data.sum() == 300 - 3 * 40
    assert np.all(keys[data, K.L4_LEN] == 124 - 34)
    assert all(r.out_ports == [2] for r in replay(w))


def test_ipv6_variant_parses_and_is_accepted(tmp_path):
    w = W.generate("B", flows=40, packets=3 * 40 + 120 * 3, ipv6=True, out_dir=tmp_path)
    assert w.frame_size == 78  # the smallest frame holding Ethernet + IPv6 + TCP
    capture = read_capture(w.pcap_path)
    keys = keys_of(capture)
    assert np.all(capture.lengths == 74)
    assert np.all(keys[:, K.PARSE_FLAGS] == 0)
    assert np.all(keys[:, K.DL_TYPE] == K.ETH_TYPE_IPV6)
    assert "tcp6" in w.flows_path.read_text()
    results = replay(w)
    assert all(r.out_ports == [2] for r in results)
    new = sum("new" in r.ct_state.split("|") for r in results)
    assert new == w.expected_new == 40 + 3 * 40


def test_syn_and_its_syn_ack_never_share_an_rx_batch(small_b):
    keys = keys_of(read_capture(small_b.pcap_path))

    def tuple_at(i, reverse=False):
        src, dst = keys[i, K.NW_SRC + 3], keys[i, K.NW_DST + 3]
        sport, dport = keys[i, K.TP_SRC], keys[i, K.TP_DST]
        return (dst, src, dport, sport) if reverse else (src, dst, sport, dport)

    first_syn = {}
    syn_acks = 0
    for i, flags in enumerate(keys[:, K.TCP_FLAGS]):
        if flags == 0x02:
            first_syn.setdefault(tuple_at(i), i)
        elif flags == 0x12:
            syn_acks += 1
            assert i - first_syn[tuple_at(i, reverse=True)] >= W.RX_BATCH
    assert syn_acks == FLOWS


# --- in memory: build() and rules() -------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="B", flows=40, packets=3 * 40 + 3 * 40 * 2 + 11, seed=3),
        dict(kind="A", flows=30, packets=500, ipv6=True, frame_size=300, nat="snat"),
    ],
    ids=["B", "A-ipv6-snat"],
)
def test_build_returns_the_packets_generate_writes(tmp_path, kwargs):
    w = W.generate(out_dir=tmp_path, **kwargs)
    traffic = W.build(**kwargs)
    capture = read_capture(w.pcap_path)
    assert traffic.frames.tobytes() == b"".join(capture.frame(i).tobytes()
                                                for i in range(len(capture)))  # fmt: skip
    assert np.array_equal(traffic.ts_ns, capture.ts_ns)
    assert int(np.count_nonzero(traffic.tcp_flags == W.SYN)) == w.expected_new
    assert traffic.rounds == w.rounds and traffic.unidirectional_flows == w.unidirectional_flows
    ipv6 = kwargs.get("ipv6", False)
    assert W.rules(w.kind, ipv6, kwargs.get("nat")) == w.flows_path.read_text()
    assert W.rules(w.kind, ipv6, stateless=True) == w.stateless_flows_path.read_text()
    # a client's frames come from the client MAC, a server's from the server MAC
    client_mac = np.frombuffer(bytes.fromhex(W.CLIENT_MAC.replace(":", "")), np.uint8)
    assert np.array_equal(traffic.from_client, (traffic.frames[:, 6:12] == client_mac).all(1))
    tcp = W.header_len(ipv6) - W.TCP_HLEN
    sport = (traffic.frames[:, tcp].astype(np.int64) << 8) | traffic.frames[:, tcp + 1]
    first = traffic.endpoints
    assert sport[0] == first.client_port[0] and len(first.client_ip) == w.flows


# --- through the reference engine -----------------------------------------------------------


def test_a_every_packet_is_accepted_and_data_is_established(small_a):
    results = replay(small_a)
    assert all(r.out_ports == [2] and r.drop_reason is None for r in results)
    keys = keys_of(read_capture(small_a.pcap_path))
    from_server = (keys[:, K.NW_SRC + 3] >> 20) == (W.SERVER_NET_V4 >> 20)
    is_syn = keys[:, K.TCP_FLAGS] == 0x02
    expected = np.where(is_syn, "new|trk", np.where(from_server, "est|rpl|trk", "est|trk"))
    assert [r.ct_state for r in results] == list(expected)
    assert Counter(expected)["new|trk"] == FLOWS


def test_b_one_packet_in_three_is_new_and_established_traffic_flows(small_b):
    results = replay(small_b)
    new = [("new" in r.ct_state.split("|")) for r in results]
    share = sum(new) / len(results)
    assert abs(share - 1 / 3) <= 0.01
    assert sum(new) == small_b.expected_new
    assert all(r.out_ports == [2] for r in results)  # new ones are committed from port 1
    established = [r for r, is_new in zip(results, new, strict=True) if not is_new]
    assert len(established) == small_b.packets - small_b.expected_new
    assert all("est" in r.ct_state.split("|") for r in established)


def test_b_new_fraction_sets_the_unidirectional_share(tmp_path):
    w = W.generate("B", flows=40, packets=3 * 40 + 100 * 5, new_fraction=0.2, out_dir=tmp_path)
    assert w.unidirectional_flows == 20  # 20 / (80 + 20) of each round
    results = replay(w)
    new = sum("new" in r.ct_state.split("|") for r in results)
    assert new == w.expected_new == 40 + 20 * 5
    assert all(r.out_ports == [2] for r in results)


def test_stateless_rules_forward_everything_untracked(small_b):
    results = replay(small_b, small_b.stateless_flows_path)
    assert all(r.out_ports == [2] and r.ct_state == "" for r in results)


def test_manifest_describes_the_files(small_b):
    manifest = json.loads(small_b.manifest_path.read_text())
    assert manifest["packets"] == small_b.packets
    assert manifest["expected_new"] == small_b.expected_new
    assert manifest["pcap_path"] == str(small_b.pcap_path)


# --- ctaccel gen ----------------------------------------------------------------------------


def test_gen_command_writes_the_workload(tmp_path):
    runner = CliRunner()
    args = ["--workload", "b", "--flows", "40", "--packets", "400", "--seed", "3",
            "--out-dir", str(tmp_path)]  # fmt: skip
    result = runner.invoke(gen, args)
    assert result.exit_code == 0, result.output
    pcaps = list(tmp_path.glob("*.pcap"))
    assert len(pcaps) == 1 and pcaps[0].name.startswith("B-40flows-400pkts")
    assert len(read_capture(pcaps[0])) == 400
    assert len(list(tmp_path.glob("*.flows"))) == 2
    assert "expected NEW" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--flows", "100", "--packets", "10"],
        ["--workload", "A", "--new-fraction", "0.5"],
        ["--ipv6", "--frame-size", "64"],
    ],
)
def test_gen_command_errors_are_one_line_and_exit_2(tmp_path, args):
    result = CliRunner().invoke(gen, [*args, "--out-dir", str(tmp_path / "w")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctaccel: error:")
    assert not (tmp_path / "w").exists()


# --- the SNAT variant ---------------------------------------------------------------------------


def test_snat_workload_translates_every_packet_and_replies_come_back(tmp_path):
    """Reference engine: every SYN is new, everything else est, every packet leaves NATed."""
    from scapy.all import IP, TCP, Ether

    w = W.generate("A", flows=FLOWS, packets=3 * FLOWS + 2 * FLOWS * 2, nat="snat",
                   out_dir=tmp_path)  # fmt: skip
    assert "-snat-" in w.pcap_path.name and "nat(src=192.168.0.1)" in w.flows_path.read_text()
    results = replay(w)
    states = Counter(r.ct_state for r in results)
    assert states["new|trk"] == FLOWS and all(r.out_ports == [W.OUT_PORT] for r in results)
    for r in results:
        pkt = Ether(r.outputs[0][1])
        src, dst = pkt[IP].src, pkt[IP].dst
        # clients leave as the NAT address; replies reach the client's own address
        assert (src == "192.168.0.1" and dst.startswith("172.")) or (
            src.startswith("172.") and dst.startswith("10.")
        ), (src, dst)
        fresh = Ether(bytes(pkt))
        del fresh[IP].chksum, fresh[TCP].chksum
        assert bytes(Ether(bytes(fresh))) == bytes(pkt)  # checksums still valid


def test_snat_workload_takes_the_fast_path_for_99_percent(tmp_path):
    """Issue 5: established NATed connections take the fast path. With 60 data packets per
    connection the handshakes (3 per connection, each changes state) are under 1%."""
    from ctaccel.datapath.engine import DatapathEngine

    flows = 100
    w = W.generate("A", flows=flows, packets=3 * flows + 2 * flows * 150, nat="snat",
                   out_dir=tmp_path)  # fmt: skip
    capture = read_capture(w.pcap_path)
    n = len(capture)
    frames = [capture.frame(i).tobytes() for i in range(n)]
    times = [int(t) // 1_000_000 for t in capture.ts_ns]
    outs = {}
    for mode in ("recirc", "assume-established"):
        eng = DatapathEngine(load_flows(w.flows_path), mode)
        res = eng.process_batch(frames, [W.IN_PORT] * n, times)
        outs[mode] = [(r.outputs, r.ct_state) for r in res]
        paths = Counter(r.path for r in res)
    assert outs["recirc"] == outs["assume-established"]
    assert paths["fast"] / n >= 0.99, paths


@pytest.mark.parametrize("ipv6,nat", [(False, None), (True, None), (False, "snat"), (True, "snat")])
def test_template_rows_are_the_frames_packet_build_makes(ipv6, nat):
    """The templates are computed in numpy (flow 0's frame of each kind with another flow's
    addresses and ports written in, both checksums updated): every row equals the frame
    packet.build makes for that flow on its own."""
    from ctaccel.packet import build as B

    plan = W._prepare("B", 40, None, None, ipv6, 5, None, nat)
    ends, tp = plan.endpoints, plan.templates
    frame_len = tp.base.shape[1]
    payload = (W.PAYLOAD_PATTERN * frame_len)[: plan.payload_len]
    rows = np.arange(4 * plan.flows + plan.unidirectional)
    frames, _sums = template_rows(tp, rows)
    for r in rows:
        f, k = (r // 4, r % 4) if r < 4 * plan.flows else (r - 3 * plan.flows, 0)
        c, s = (
            (ends.client_ip[f], int(ends.client_port[f])),
            (ends.server_ip[f], int(ends.server_port[f])),
        )
        back = c[0] if plan.snat_addr is None else plan.snat_addr
        data = payload if k in (1, 3) else b""
        if k < 2:
            want = B.tcp_frame(W.CLIENT_MAC, W.SERVER_MAC, c[0], s[0], c[1], s[1], flags=0,
                               payload=data, seg=W.TCP_FIELDS)  # fmt: skip
        else:
            want = B.tcp_frame(W.SERVER_MAC, W.CLIENT_MAC, s[0], back, s[1], c[1], flags=0,
                               payload=data, seg=W.TCP_FIELDS)  # fmt: skip
        assert bytes(frames[r]) == want.ljust(frame_len, b"\x00"), (r, f, k)
