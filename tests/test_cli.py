"""The command line as a user meets it: outputs, error lines, exit codes."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from ctaccel.cli import main
from ctaccel.demo import UDP_FLOWS, udp_packets
from ctaccel.io.pcap import read_capture, write_pcap


@pytest.fixture
def udp_case(tmp_path):
    flows = tmp_path / "flows.txt"
    flows.write_text(UDP_FLOWS)
    pkts = udp_packets()
    inputs = []
    for port in (1, 2):
        sel = [(i, f) for i, (p, f, _w) in enumerate(pkts) if p == port]
        path = tmp_path / f"p{port}.pcap"
        write_pcap(str(path), [f for _i, f in sel], [(5 + i) * 1_000_000 for i, _f in sel])
        inputs.append(f"{port}={path}")
    return flows, inputs, pkts


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_replay_writes_every_output(udp_case, tmp_path):
    flows, inputs, pkts = udp_case
    out = tmp_path / "out"
    r = run(
        [
            "replay",
            "--flows",
            str(flows),
            *sum((["--in", i] for i in inputs), []),
            "--out-dir",
            str(out),
            "--quiet",
        ]
    )
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in (out / "packets.jsonl").read_text().splitlines()]
    assert [x["n"] for x in recs] == list(range(1, len(pkts) + 1))
    assert [x["in_port"] for x in recs] == [p for p, _f, _w in pkts]  # merged by timestamp
    assert recs[0]["ct_state"] == "new|trk" and recs[0]["out"] == [2]
    assert recs[1]["ct_state"] == "est|rpl|trk" and recs[1]["out"] == [1]
    assert recs[3]["out"] == [] and recs[3]["drop_reason"] == "rule_drop"
    # every emitted frame is in the port capture, in order
    to_port2 = [i for i, x in enumerate(recs) if x["out"] == [2]]
    cap = read_capture(str(out / "port-2.pcap"))
    assert len(cap.offsets) == len(to_port2)
    first = cap.data[cap.offsets[0] : cap.offsets[0] + cap.lengths[0]].tobytes()
    assert first == pkts[to_port2[0]][1]
    ct_lines = (out / "conntrack.txt").read_text().splitlines()
    assert len(ct_lines) == 2 and all("zone=5" in x for x in ct_lines)
    flows_out = (out / "flows.txt").read_text()
    assert "n_packets=5" in flows_out and "duration" not in flows_out


def test_missing_flows_file_is_one_line_exit_2_and_writes_nothing(udp_case, tmp_path):
    _flows, inputs, _ = udp_case
    out = tmp_path / "never"
    r = run(
        ["replay", "--flows", str(tmp_path / "nope.txt"), "--in", inputs[0], "--out-dir", str(out)]
    )
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope.txt" in r.stderr
    assert not out.exists()


def test_missing_capture_is_one_line_exit_2_and_writes_nothing(udp_case, tmp_path):
    flows, inputs, _ = udp_case
    out = tmp_path / "never"
    r = run(
        [
            "replay",
            "--flows",
            str(flows),
            "--in",
            inputs[0],
            "--in",
            "2=/no/such.pcap",
            "--out-dir",
            str(out),
        ]
    )
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "/no/such.pcap" in r.stderr
    assert not out.exists()


def test_bad_rule_file_is_rejected_whole_with_file_and_line(udp_case, tmp_path):
    _flows, inputs, _ = udp_case
    bad = tmp_path / "bad.txt"
    bad.write_text(
        "# ok\ntable=0,priority=10,udp,actions=output:2\n"
        "table=0,priority=5,udp,actions=frobnicate\n"
    )
    out = tmp_path / "never"
    r = run(["replay", "--flows", str(bad), "--in", inputs[0], "--out-dir", str(out)])
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and f"{bad}:3:" in line
    assert not out.exists()


def test_bad_in_spec(udp_case, tmp_path):
    flows, _inputs, _ = udp_case
    r = run(["replay", "--flows", str(flows), "--in", "x.pcap", "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "PORT=PCAP" in r.stderr


def test_trace_shows_real_conntrack_state(udp_case):
    flows, inputs, _ = udp_case
    r = run(
        ["trace", "--flows", str(flows), *sum((["--in", i] for i in inputs), []), "--packet", "2"]
    )
    assert r.exit_code == 0, r.output
    assert "ct_state=est|rpl|trk" in r.output and "Result: output to 1" in r.output


def test_trace_packet_out_of_range(udp_case):
    flows, inputs, _ = udp_case
    r = run(["trace", "--flows", str(flows), "--in", inputs[0], "--packet", "99"])
    assert r.exit_code == 2 and "fewer packets" in r.stderr


def test_dump_conntrack_and_dump_flows(udp_case):
    flows, inputs, _ = udp_case
    args = ["--flows", str(flows), *sum((["--in", i] for i in inputs), [])]
    r = run(["dump-conntrack", *args])
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2
    assert r.output.startswith("udp,orig=(src=10.1.1.")
    r = run(["dump-flows", *args])
    assert r.exit_code == 0 and "n_packets=" in r.output


def test_demo_runs_with_no_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(["demo", "--out-dir", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert "est|rpl|trk" in r.output
    assert os.path.exists(tmp_path / "demo" / "tcp-firewall" / "out" / "packets.jsonl")
    # the SNAT case: C's colliding source port is moved to the next one, replies come back
    snat = tmp_path / "demo" / "snat" / "out"
    assert "dst=192.168.0.1,sport=80,dport=40001" in (snat / "conntrack.txt").read_text()
    recs = [json.loads(x) for x in (snat / "packets.jsonl").read_text().splitlines()]
    assert [r["ct_state"] for r in recs][:3] == ["new|trk", "est|rpl|trk|dnat", "est|trk|snat"]
    assert "fast" in {r["path"] for r in recs} and recs[-1]["out"] == []


def test_merge_by_timestamp_ties_by_input_order_file_order_kept(tmp_path):
    from ctaccel.packet import build as B
    from ctaccel.replay import iter_packets, load_inputs

    f = [
        B.udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", i, 9)
        for i in range(1, 7)
    ]
    write_pcap(str(tmp_path / "a.pcap"), [f[0], f[1], f[2]], [5_000_000, 3_000_000, 9_000_000])
    write_pcap(str(tmp_path / "b.pcap"), [f[3], f[4], f[5]], [5_000_000, 6_000_000, 9_000_000])
    caps, ports = load_inputs([(2, str(tmp_path / "b.pcap")), (1, str(tmp_path / "a.pcap"))])
    got = [(port, bytes(frame), now) for _n, port, frame, _ts, now in iter_packets(caps, ports)]
    # b (listed first) wins ties; a's second packet stays after its first (file order), and
    # the clock does not go back for it.
    assert [(p, fr) for p, fr, _ in got] == [
        (2, f[3]),
        (1, f[0]),
        (1, f[1]),
        (2, f[4]),
        (2, f[5]),
        (1, f[2]),
    ]
    assert [now for _p, _f, now in got] == [5, 5, 5, 6, 9, 9]


@pytest.mark.parametrize("mode", ["recirc", "assume-established"])
def test_every_mode_writes_the_same_files(tmp_path, mode):
    """packets.jsonl (but `path`), port captures, conntrack.txt and flows.txt are identical."""
    from ctaccel.demo import TCP_FLOWS, tcp_packets
    from ctaccel.replay import replay

    flows = tmp_path / "flows.txt"
    flows.write_text(TCP_FLOWS)
    pkts = tcp_packets() * 3
    inputs = []
    for port in (1, 2):
        sel = [(i, f) for i, (p, f, _w) in enumerate(pkts) if p == port]
        path = tmp_path / f"p{port}.pcap"
        write_pcap(str(path), [f for _i, f in sel], [(5 + i) * 1_000_000 for i, _f in sel])
        inputs.append((port, str(path)))
    outs = {}
    for m in ("reference", mode):
        d = tmp_path / m
        replay(str(flows), inputs, str(d), mode=m)
        recs = [json.loads(x) for x in (d / "packets.jsonl").read_text().splitlines()]
        for r in recs:
            assert r.pop("path")
        files = {
            name: (d / name).read_bytes()
            for name in sorted(os.listdir(d))
            if name.endswith(".pcap") or name in ("conntrack.txt", "flows.txt")
        }
        outs[m] = (recs, files)
    assert outs[mode] == outs["reference"]
    assert set(outs[mode][1]) >= {"port-1.pcap", "port-2.pcap", "conntrack.txt", "flows.txt"}


@pytest.mark.parametrize("mode", ["recirc", "reference", "assume-established"])
def test_replay_command_runs_the_mode_asked_for(udp_case, tmp_path, mode):
    flows, inputs, _pkts = udp_case
    out = tmp_path / "out"
    r = run(["replay", "--flows", str(flows), *sum((["--in", i] for i in inputs), []),
             "--out-dir", str(out), "--mode", mode, "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mode"] == mode
    paths = {json.loads(x)["path"] for x in (out / "packets.jsonl").read_text().splitlines()}
    if mode != "assume-established":
        assert "fast" not in paths
