"""The assume-established fast path and the FTP helper: a data connection (an ordinary
connection once committed) is served by the fast path; the control connection, whose packets
OVS reads, never is."""

from __future__ import annotations

from support.oracle.compare import run_ctaccel
from support.oracle.frames import Timeline, tcp
from support.oracle.scenarios_alg import AlgScenario, firewall


def test_data_connections_take_the_fast_path_control_connections_never(tmp_path):
    t = Timeline()
    ctrl = [t.send("A", tcp("A", "B", 40000, 21, "S", 99, 0)),
            t.send("B", tcp("B", "A", 21, 40000, "SA", 499, 100)),
            t.send("A", tcp("A", "B", 40000, 21, "A", 100, 500))]  # fmt: skip
    cmd = b"227 Entering Passive Mode (10,1,1,2,195,80)\r\n"
    ctrl.append(t.send("B", tcp("B", "A", 21, 40000, "PA", 500, 100, cmd)))
    data = [t.send("A", tcp("A", "B", 41000, 50000, "S", 9, 0)),
            t.send("B", tcp("B", "A", 50000, 41000, "SA", 19, 10)),
            t.send("A", tcp("A", "B", 41000, 50000, "A", 10, 20))]  # fmt: skip
    a_seq, b_seq = 100, 500 + len(cmd)
    for k in range(30):
        data.append(t.send("A", tcp("A", "B", 41000, 50000, "PA", 10 + 8 * k, 20, b"x" * 8)))
        ctrl.append(t.send("A", tcp("A", "B", 40000, 21, "PA", a_seq, b_seq, b"NOOP\r\n")))
        a_seq += 6
        ctrl.append(t.send("B", tcp("B", "A", 21, 40000, "A", b_seq, a_seq)))
    s = AlgScenario("fast_path_and_helpers", firewall(), t.packets)
    records, _ct = run_ctaccel(s, tmp_path, "assume-established")
    path = [r["path"] for r in records]  # Timeline numbers packets from 1
    assert records[data[0] - 1]["ct_state"] == "new|rel|trk"
    later = data[10:]
    assert all(path[n - 1] == "fast" for n in later), [path[n - 1] for n in later]
    assert all(path[n - 1] != "fast" for n in ctrl)
