"""A takeover replayed offline: ``ctaccel dump-conntrack -m -s`` of the first part of a capture,
then ``ctaccel replay --ct-import`` of the rest, gives the rest the verdicts (output ports, ct_state, drop reason) and the
final conntrack table that replaying the whole capture gives (both compiled modes and the
reference engine, through the command line).

The traffic (scapy, two ports, the talk's zone-5 firewall that drops +inv): TCP connections
with window scaling that carry data both ways across the split, one that closes after it, one
that is reset; UDP both ways; ICMP echoes; and, after the split, once both sides of a TCP
connection have spoken again, segments outside the window and a blind RST, which strict
tracking must reject as the whole replay does (an imported connection is liberal only until
both sides have been seen). A plain dump (no -m -s: states only, default timeouts) is read
back too, and a kernel-style ``conntrack -L`` table with zone 0 is mapped onto zone 5.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from ctaccel.bench.netns import FIREWALL
from ctaccel.cli import main

INV_DROP = "table=0,priority=200,ip,ct_state=+trk+inv,actions=drop\n"
RULES = INV_DROP + FIREWALL
A, B = ("02:00:00:00:00:01", "10.1.0.1"), ("02:00:00:00:00:02", "10.1.0.2")
SPLIT = 1.0
MODES = ("reference", "recirc", "assume-established")


def _ctaccel(*args: str):
    """The command line, in this process (click's runner: the same code, no start-up)."""
    done = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done


def _frame(src, dst, l4):
    return Ether(src=src[0], dst=dst[0]) / IP(src=src[1], dst=dst[1]) / l4


def _tcp_conversation(sport, t0, rounds, end=None):
    """(port, time, frame) of a scaled handshake at t0, a request/response every 0.15 s, and
    ``end``: "fin" (both close after the split), "rst" (the server resets) or None."""
    c, s = 100_000, 9_000_000
    opts = [("WScale", 7), ("MSS", 1460)]
    ev = [(1, t0, _frame(A, B, TCP(sport=sport, dport=80, flags="S", seq=c, window=64240,
                                   options=opts))),
          (2, t0 + 0.01, _frame(B, A, TCP(sport=80, dport=sport, flags="SA", seq=s, ack=c + 1,
                                          window=65160, options=opts))),
          (1, t0 + 0.02, _frame(A, B, TCP(sport=sport, dport=80, flags="A", seq=c + 1,
                                          ack=s + 1, window=502)))]  # fmt: skip
    c, s = c + 1, s + 1
    t = t0 + 0.1
    for _ in range(rounds):
        ev.append((1, t, _frame(A, B, TCP(sport=sport, dport=80, flags="PA", seq=c, ack=s,
                                          window=502) / (b"q" * 100))))  # fmt: skip
        c += 100
        ev.append((2, t + 0.01, _frame(B, A, TCP(sport=80, dport=sport, flags="PA", seq=s, ack=c,
                                                 window=509) / (b"r" * 300))))  # fmt: skip
        s += 300
        if t > SPLIT + 0.2:  # both sides spoke after the split: strict again
            bad = TCP(sport=sport, dport=80, flags="PA", seq=c + 50_000_000, ack=s, window=502)
            ev.append((1, t + 0.02, _frame(A, B, bad / b"x")))  # far outside the window
            ev.append(
                (
                    2,
                    t + 0.03,
                    _frame(B, A, TCP(sport=80, dport=sport, flags="R", seq=s + 7_000_000)),
                )
            )  # blind RST
        t += 0.15
    if end == "fin":
        ev += [(1, t, _frame(A, B, TCP(sport=sport, dport=80, flags="FA", seq=c, ack=s,
                                       window=502))),
               (2, t + 0.01, _frame(B, A, TCP(sport=80, dport=sport, flags="FA", seq=s,
                                              ack=c + 1, window=509))),
               (1, t + 0.02, _frame(A, B, TCP(sport=sport, dport=80, flags="A", seq=c + 1,
                                              ack=s + 1, window=502)))]  # fmt: skip
    elif end == "rst":
        ev.append((2, t, _frame(B, A, TCP(sport=80, dport=sport, flags="R", seq=s))))
        ev.append((1, t + 0.05, _frame(A, B, TCP(sport=sport, dport=80, flags="PA", seq=c,
                                                 ack=s, window=502) / b"late")))  # fmt: skip
    return ev


def _traffic():
    ev = []
    ev += _tcp_conversation(40001, 0.0, 14)
    ev += _tcp_conversation(40002, 0.3, 10, end="fin")
    ev += _tcp_conversation(40003, 0.5, 8, end="rst")
    ev += _tcp_conversation(40004, 1.3, 4)  # opened after the split
    for i in range(12):
        t = 0.05 + 0.17 * i
        ev.append((1, t, _frame(A, B, UDP(sport=5353, dport=53) / b"query")))
        ev.append((2, t + 0.01, _frame(B, A, UDP(sport=53, dport=5353) / b"answer")))
        ev.append((1, t + 0.02, _frame(A, B, ICMP(type=8, id=77, seq=i) / b"ping")))
        ev.append((2, t + 0.03, _frame(B, A, ICMP(type=0, id=77, seq=i) / b"ping")))
    ev.append((2, SPLIT + 0.6, _frame(B, A, UDP(sport=53, dport=5354) / b"unsolicited")))
    return sorted(ev, key=lambda e: e[1])


def _write(tmp, name, events):
    paths = []
    for port in (1, 2):
        frames = []
        for p, t, frame in events:
            if p == port:
                frame.time = 1_700_000_000 + t
                frames.append(frame)
        path = tmp / f"{name}-p{port}.pcap"
        wrpcap(str(path), frames)
        paths += ["--in", f"{port}={path}"]
    return paths


def _replay(tmp, name, mode, ins, *extra):
    out = tmp / f"{name}-{mode}"
    _ctaccel("replay", "--flows", str(tmp / "rules.flows"), "--out-dir", str(out), "--mode",
             mode, "--quiet", *ins, *extra)  # fmt: skip
    lines = [json.loads(x) for x in (out / "packets.jsonl").read_text().splitlines()]
    return lines, (out / "conntrack.txt").read_text()


_WHOLE: dict = {}


def _whole(tmp, mode, ins):
    if mode not in _WHOLE:
        _WHOLE[mode] = _replay(tmp, "whole", mode, ins)
    return _WHOLE[mode]


def _verdicts(lines):
    return [(x["in_port"], x["out"], x["ct_state"], x["drop_reason"]) for x in lines]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ct-import")
    (tmp / "rules.flows").write_text(RULES)
    events = _traffic()
    first = [e for e in events if e[1] < SPLIT]
    rest = [e for e in events if e[1] >= SPLIT]
    return tmp, _write(tmp, "whole", events), _write(tmp, "first", first), \
        _write(tmp, "rest", rest), len(rest)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_import_of_a_verbose_dump_continues_the_capture_exactly(capture, mode):
    tmp, whole, first, rest, n_rest = capture
    dump = _ctaccel("dump-conntrack", "--flows", str(tmp / "rules.flows"), "--mode", mode,
                    "-m", "-s", *first).stdout  # fmt: skip
    assert "state_orig=ESTABLISHED" in dump and "timeout=" in dump
    (tmp / f"dump-{mode}.txt").write_text(dump)
    whole_lines, whole_ct = _whole(tmp, mode, whole)
    lines, ct = _replay(tmp, "rest", mode, rest, "--ct-import", str(tmp / f"dump-{mode}.txt"))
    assert len(lines) == n_rest
    assert _verdicts(lines) == _verdicts(whole_lines[-n_rest:])
    assert ct == whole_ct
    # the test has teeth: out-of-window data and blind RSTs after the split were dropped,
    # the reset connection's late segment too, and the unsolicited UDP
    drops = [x for x in lines if not x["out"]]
    assert len(drops) >= 2 * 4 + 2, drops


def test_without_the_import_the_rest_is_not_the_same(capture):
    tmp, whole, _first, rest, n_rest = capture
    whole_lines, _ = _whole(tmp, "recirc", whole)
    lines, _ = _replay(tmp, "bare", "recirc", rest)
    assert _verdicts(lines) != _verdicts(whole_lines[-n_rest:])


@pytest.mark.parametrize("mode", ("recirc", "assume-established"))
def test_a_plain_dump_and_a_kernel_table_are_read_back_too(capture, mode):
    tmp, whole, first, rest, n_rest = capture
    plain = _ctaccel("dump-conntrack", "--flows", str(tmp / "rules.flows"), *first).stdout
    (tmp / "plain.txt").write_text(plain)
    whole_lines, _ = _whole(tmp, mode, whole)
    lines, _ = _replay(tmp, "plain", mode, rest, "--ct-import", str(tmp / "plain.txt"))
    assert _verdicts(lines) == _verdicts(whole_lines[-n_rest:])
    # the same table as the kernel prints it (zone 0 there), mapped onto the rules' zone 5
    kernel = []
    for line in plain.splitlines():
        kernel.append(_as_conntrack_l(line))
    (tmp / "kernel.txt").write_text("\n".join(kernel) + "\n")
    lines, ct = _replay(tmp, "kernel", mode, rest, "--ct-import", str(tmp / "kernel.txt"),
                        "--zone-map", "0=5")  # fmt: skip
    assert _verdicts(lines) == _verdicts(whole_lines[-n_rest:])
    assert "zone=5" in ct


def _as_conntrack_l(line: str) -> str:
    """A dpctl line of this test's traffic rewritten as `conntrack -L` prints it, zone 0."""
    proto, rest = line.split(",orig=(", 1)
    orig, rest = rest.split("),reply=(", 1)
    reply, rest = rest.split(")", 1)
    state = ""
    kernel_state = {"ESTABLISHED": "ESTABLISHED", "TIME_WAIT": "TIME_WAIT",
                    "SYN_SENT": "SYN_SENT", "CLOSING": "FIN_WAIT"}  # fmt: skip
    if "protoinfo=(state=" in rest:
        state = kernel_state[rest.split("protoinfo=(state=")[1].rstrip(")")]
    numbers = {"tcp": 6, "udp": 17, "icmp": 1}
    words = [
        proto,
        str(numbers[proto]),
        "100",
        state,
        orig.replace(",", " "),
        reply.replace(",", " "),
        "[ASSURED]",
        "mark=0",
        "use=1",
    ]
    return " ".join(w for w in words if w)
