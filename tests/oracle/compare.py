"""Run a scenario on OVS (cached per session) and on ctaccel, and compare them packet by packet.

What: ``ovs_result`` plays a scenario through the ``OvsOracle`` once per session;
``run_ctaccel`` writes the scenario's inputs (one pcap per input port, the flows file) and calls
``ctaccel.replay.replay``; ``differences`` returns a readable side-by-side table when they
disagree (None when they agree).

Design: packets are compared by position (the replay processes inputs merged by timestamp, and
scenario times strictly increase, so positions line up). Output ports are compared as sorted
lists: dpif-netdev queues outputs per tx port and flushes them port by port at the end of a
batch, so the order in which OVS *emits* a packet to several ports is not the action order (a
``output:3,output:2`` rule comes out on 2 first); ctaccel emits in action order.

Invariants: the OVS side never sees ctaccel's output; pcaps carry exact millisecond stamps.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .ovs_driver import OracleRun, OvsOracle
from .scenarios import Scenario

_OVS_CACHE: dict[str, OracleRun] = {}


def ovs_result(oracle: OvsOracle, scenario: Scenario) -> OracleRun:
    """The OVS run of ``scenario`` (instrumented), computed once per session."""
    if scenario.name not in _OVS_CACHE:
        _OVS_CACHE[scenario.name] = oracle.run(
            scenario.flows, scenario.packets, scenario.zone_limits, with_n_packets=True
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


def run_ctaccel(
    scenario: Scenario, tmp_path: Path, mode: str = "assume-established"
) -> tuple[list[dict], list[str]]:
    """Replay ``scenario`` with ctaccel in ``mode``; returns (packets.jsonl records, conntrack
    lines)."""
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
    )
    records = [
        json.loads(line)
        for line in (out_dir / "packets.jsonl").read_text().splitlines()
        if line.strip()
    ]
    conntrack_text = (out_dir / "conntrack.txt").read_text()
    conntrack = sorted(line.strip() for line in conntrack_text.splitlines() if line.strip())
    return records, conntrack


def _fmt_out(ports) -> str:
    return ",".join(str(p) for p in ports) if ports else "drop"


def _fmt_state(state) -> str:
    return "(no rule)" if state is None else (state or "-trk")


def differences(scenario: Scenario, ovs: OracleRun, ours: list[dict], conntrack: list[str]):
    """None when ctaccel matches OVS, else a side-by-side report (first divergence marked)."""
    rows = []
    first = None
    n = max(len(ovs.packets), len(ours))
    for i in range(n):
        o = ovs.packets[i] if i < len(ovs.packets) else None
        c = ours[i] if i < len(ours) else None
        port, _frame, t_ms = scenario.packets[i] if i < len(scenario.packets) else (0, b"", 0)
        same = (
            o is not None
            and c is not None
            and sorted(o.out) == sorted(c.get("out", []))
            and o.ct_state == c.get("ct_state")
        )
        if not same and first is None:
            first = i
        ovs_text = "-" if o is None else f"{_fmt_out(o.out):<8} {_fmt_state(o.ct_state):<14}"
        our_text = (
            "-" if c is None else f"{_fmt_out(c.get('out')):<8} {_fmt_state(c.get('ct_state')):<14}"
        )
        reason = "" if c is None or not c.get("drop_reason") else f" ({c['drop_reason']})"
        mark = "  " if same else "<<" if i == first else " *"
        rows.append(f"{i + 1:>3} p{port} {t_ms:>8} | {ovs_text:<24}| {our_text:<24}{reason} {mark}")
    ct_same = sorted(ovs.conntrack) == sorted(conntrack)
    if first is None and ct_same:
        return None
    head = f"scenario {scenario.name}: "
    head += f"first divergence at packet {first + 1}" if first is not None else "packets agree"
    lines = [
        head,
        "  #  in     t_ms | OVS out  ct_state       | ctaccel out ct_state",
        *rows,
    ]
    if not ct_same:
        lines.append("conntrack differs:")
        lines += [f"  OVS only:     {x}" for x in sorted(set(ovs.conntrack) - set(conntrack))]
        lines += [f"  ctaccel only: {x}" for x in sorted(set(conntrack) - set(ovs.conntrack))]
    return "\n".join(lines)
