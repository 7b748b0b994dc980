"""Run a scenario on OVS (cached per session) and on ctaccel, and compare them packet by packet.

What: ``ovs_result`` plays a scenario through the ``OvsOracle`` once per session;
``run_ctaccel`` writes the scenario's inputs (one pcap per input port, the flows file) and calls
``ctaccel.replay.replay``; ``differences`` returns a readable side-by-side table when they
disagree (None when they agree).

Design: packets are compared by position (the replay processes inputs merged by timestamp, and
scenario times strictly increase, so positions line up). Output ports are compared as sorted
lists: dpif-netdev queues outputs per tx port and flushes them port by port at the end of a
batch, so the order in which OVS *emits* a packet to several ports is not the action order (a
``output:3,output:2`` rule comes out on 2 first); ctaccel emits in action order. For the same
reason emitted frames are compared byte for byte per port: the sequence of frames a packet
put on each port must be identical. ctaccel's frames come from the replay's port-N.pcap files
(records in emission order), handed back to each packets.jsonl record under "frames" as
[port, hex] pairs. Scenarios whose NAT port choice depends on OVS's random hash basis (listed
in ``scenarios_nat.NONDETERMINISTIC_FRAMES`` or with ``deterministic_frames = False``) skip
the frame bytes and compare conntrack lines with the reply tuple's ports and ids masked.

Invariants: the OVS side never sees ctaccel's output; pcaps carry exact millisecond stamps.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from .ovs_driver import OracleRun, OvsOracle, read_pcap_records
from .scenarios import Scenario
from .scenarios_nat import NONDETERMINISTIC_FRAMES

_OVS_CACHE: dict[str, OracleRun] = {}


def ovs_result(oracle: OvsOracle, scenario: Scenario) -> OracleRun:
    """The OVS run of ``scenario`` (instrumented), computed once per session."""
    if scenario.name not in _OVS_CACHE:
        _OVS_CACHE[scenario.name] = oracle.run(
            scenario.flows,
            scenario.packets,
            scenario.zone_limits,
            with_n_packets=True,
            bridge=scenario.bridge,
            timeout_policies=scenario.timeout_policies,
        )
    return _OVS_CACHE[scenario.name]


def write_pcap(path: Path, frames: list[tuple[bytes, int]]) -> None:
    """Classic little-endian pcap (µs stamps) of (frame, time_ms); exact, unlike float times."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for frame, t_ms in frames:
        sec, ms = divmod(int(t_ms), 1000)
        out.append(struct.pack("<IIII", sec, ms * 1000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


def write_inputs(scenario: Scenario, directory: Path) -> tuple[Path, list[tuple[int, Path]]]:
    """Write the flows file and one pcap per input port; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    flows_path = directory / "flows.txt"
    flows_path.write_text(scenario.flows.strip() + "\n")
    by_port: dict[int, list[tuple[bytes, int]]] = {}
    for port, frame, t_ms in scenario.packets:
        by_port.setdefault(port, []).append((frame, t_ms))
    inputs = []
    for port in sorted(by_port):
        pcap = directory / f"in-p{port}.pcap"
        write_pcap(pcap, by_port[port])
        inputs.append((port, pcap))
    return flows_path, inputs


def attach_frames(records: list[dict], out_dir: Path) -> None:
    """Give each packets.jsonl record its emitted frames, ``record["frames"]`` = [[port, hex],
    ...] in the record's "out" order, by taking the next unread frame of that port's pcap
    (port-N.pcap, controller.pcap: the replay appends in emission order)."""
    pending: dict = {}

    def next_frame(port) -> bytes:
        if port not in pending:
            name = "controller.pcap" if port == "controller" else f"port-{port}.pcap"
            recs, _ = read_pcap_records(out_dir / name, 0)
            pending[port] = [frame for _ts, frame in reversed(recs)]
        if not pending[port]:
            raise AssertionError(f"packets.jsonl names more outputs on {port} than its pcap holds")
        return pending[port].pop()

    for rec in records:
        rec["frames"] = [[port, next_frame(port).hex()] for port in rec.get("out") or []]
    leftover = {port: len(frames) for port, frames in pending.items() if frames}
    for path in out_dir.glob("*.pcap"):
        port = "controller" if path.stem == "controller" else int(path.stem.split("-")[1])
        if port not in pending:
            n = len(read_pcap_records(path, 0)[0])
            if n:
                leftover[port] = n
    if leftover:
        raise AssertionError(f"frames in the output pcaps that no record names: {leftover}")


def run_ctaccel(
    scenario: Scenario, tmp_path: Path, mode: str = "assume-established"
) -> tuple[list[dict], list[str]]:
    """Replay ``scenario`` with ctaccel in ``mode``; returns (packets.jsonl records, conntrack
    lines). Each record also carries its emitted frames under "frames" (see attach_frames)."""
    from ctaccel.replay import replay

    flows_path, inputs = write_inputs(scenario, tmp_path / "in")
    out_dir = tmp_path / "out"
    replay(
        flows_path,
        inputs=inputs,
        out_dir=out_dir,
        zone_limits=scenario.zone_limits or None,
        progress=False,
        mode=mode,
        bridge=scenario.bridge,
        timeout_policies=scenario.timeout_policies or None,
    )
    records = [
        json.loads(line)
        for line in (out_dir / "packets.jsonl").read_text().splitlines()
        if line.strip()
    ]
    attach_frames(records, out_dir)
    conntrack_text = (out_dir / "conntrack.txt").read_text()
    conntrack = sorted(line.strip() for line in conntrack_text.splitlines() if line.strip())
    return records, conntrack


def _fmt_out(ports) -> str:
    return ",".join(str(p) for p in ports) if ports else "drop"


def _fmt_state(state) -> str:
    return "(no rule)" if state is None else (state or "-trk")


def frames_deterministic(scenario: Scenario) -> bool:
    """False when OVS's frames for ``scenario`` may differ from run to run (NAT port choice)."""
    return scenario.name not in NONDETERMINISTIC_FRAMES and getattr(
        scenario, "deterministic_frames", True
    )


def mask_reply_ports(line: str) -> str:
    """A dump-conntrack line with the reply tuple's ports and ICMP id replaced by ``*``."""
    return re.sub(
        r"reply=\([^)]*\)",
        lambda m: re.sub(r"\b(sport|dport|id)=\d+", r"\1=*", m.group(0)),
        line,
    )


def _field_at(frame: bytes, off: int) -> str:
    """A rough name for byte ``off`` of an Ethernet frame (IPv4/IPv6 + TCP/UDP/ICMP)."""
    if off < 12:
        return "eth dst" if off < 6 else "eth src"
    if off < 14 or len(frame) < 14:
        return "ethertype"
    ethertype = int.from_bytes(frame[12:14], "big")
    l3 = off - 14
    if ethertype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        names = {10: "ip csum", 11: "ip csum", 2: "ip len", 3: "ip len", 8: "ttl"}
        if l3 < ihl:
            if 12 <= l3 < 16:
                return "ip src"
            if 16 <= l3 < 20:
                return "ip dst"
            return names.get(l3, "ip header")
        l4, l4_proto = l3 - ihl, proto
    elif ethertype == 0x86DD and len(frame) >= 54:
        if l3 < 40:
            return "ipv6 src" if 8 <= l3 < 24 else "ipv6 dst" if 24 <= l3 < 40 else "ipv6 header"
        l4, l4_proto = l3 - 40, frame[20]
    else:
        return "payload"
    if l4_proto in (6, 17):
        if l4 < 2:
            return "sport"
        if l4 < 4:
            return "dport"
        if (l4_proto == 17 and l4 in (6, 7)) or (l4_proto == 6 and l4 in (16, 17)):
            return "l4 csum"
        return "tcp header" if l4_proto == 6 and l4 < 20 else "l4 payload"
    if l4_proto in (1, 58):
        if l4 in (2, 3):
            return "icmp csum"
        if l4 in (4, 5):
            return "icmp id"
        return "icmp type/code" if l4 < 2 else "icmp body"
    return "l4"


def frame_difference(ovs_frames, our_frames) -> str | None:
    """None when both sides put the same frames (bytes, order per port) on every port; else a
    short hint naming the port, the frame and the first differing byte."""
    ovs_by_port: dict = {}
    ours_by_port: dict = {}
    for port, frame in ovs_frames:
        ovs_by_port.setdefault(port, []).append(bytes(frame))
    for port, frame in our_frames:
        if port == "controller":
            continue  # the oracle does not record controller frames
        data = bytes.fromhex(frame) if isinstance(frame, str) else bytes(frame)
        ours_by_port.setdefault(port, []).append(data)
    for port in sorted(set(ovs_by_port) | set(ours_by_port), key=str):
        a, b = ovs_by_port.get(port, []), ours_by_port.get(port, [])
        if a == b:
            continue
        if len(a) != len(b):
            return f"p{port}: OVS emitted {len(a)} frame(s), ctaccel {len(b)}"
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            if x == y:
                continue
            common = min(len(x), len(y))
            diff = [i for i in range(common) if x[i] != y[i]] or [common]
            off = diff[0]
            fields = list(dict.fromkeys(_field_at(x, i) for i in diff if i < common))
            return (
                f"p{port} frame {k + 1}: first difference at byte {off}: "
                f"OVS {x[off : off + 8].hex() or '(end)'} / ctaccel {y[off : off + 8].hex() or '(end)'}"
                f" (lengths {len(x)}/{len(y)}; differing: {', '.join(fields) or 'length'})"
            )
    return None


def differences(scenario: Scenario, ovs: OracleRun, ours: list[dict], conntrack: list[str]):
    """None when ctaccel matches OVS, else a side-by-side report (first divergence marked)."""
    check_frames = frames_deterministic(scenario)
    rows = []
    notes = []
    first = None
    n = max(len(ovs.packets), len(ours))
    for i in range(n):
        o = ovs.packets[i] if i < len(ovs.packets) else None
        c = ours[i] if i < len(ours) else None
        port, _frame, t_ms = scenario.packets[i] if i < len(scenario.packets) else (0, b"", 0)
        same = (
            o is not None
            and c is not None
            and sorted(o.out, key=str) == sorted(c.get("out") or [], key=str)
            and o.ct_state == c.get("ct_state")
        )
        frame_note = None
        if same and check_frames:
            frame_note = frame_difference(o.frames, c.get("frames") or [])
            same = frame_note is None
        if not same and first is None:
            first = i
        ovs_text = "-" if o is None else f"{_fmt_out(o.out):<8} {_fmt_state(o.ct_state):<14}"
        our_text = (
            "-" if c is None else f"{_fmt_out(c.get('out')):<8} {_fmt_state(c.get('ct_state')):<14}"
        )
        reason = "" if c is None or not c.get("drop_reason") else f" ({c['drop_reason']})"
        mark = "  " if same else "<<" if i == first else " *"
        frames_mark = " frames differ" if frame_note else ""
        rows.append(
            f"{i + 1:>3} p{port} {t_ms:>8} | {ovs_text:<24}| {our_text:<24}{reason} {mark}"
            f"{frames_mark}"
        )
        if frame_note:
            notes.append(f"  packet {i + 1}: {frame_note}")
    if check_frames:
        ovs_ct, our_ct = sorted(ovs.conntrack), sorted(conntrack)
    else:
        ovs_ct = sorted(mask_reply_ports(x) for x in ovs.conntrack)
        our_ct = sorted(mask_reply_ports(x) for x in conntrack)
    ct_same = ovs_ct == our_ct
    if first is None and ct_same:
        return None
    head = f"scenario {scenario.name}: "
    head += f"first divergence at packet {first + 1}" if first is not None else "packets agree"
    if not check_frames:
        head += " (frame bytes not compared: OVS's NAT port choice is random)"
    lines = [
        head,
        "  #  in     t_ms | OVS out  ct_state       | ctaccel out ct_state",
        *rows,
    ]
    if notes:
        lines.append("frames differ (same ports):")
        lines += notes
    if not ct_same:
        lines.append(
            "conntrack differs:" if check_frames else "conntrack differs (reply ports masked):"
        )
        lines += [f"  OVS only:     {x}" for x in sorted(set(ovs_ct) - set(our_ct))]
        lines += [f"  ctaccel only: {x}" for x in sorted(set(our_ct) - set(ovs_ct))]
        if set(ovs_ct) == set(our_ct):
            lines.append(
                f"  same lines, different counts: OVS {len(ovs_ct)}, ctaccel {len(our_ct)}"
            )
    return "\n".join(lines)
