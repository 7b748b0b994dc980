"""The FTP/TFTP helpers on their own: text as glibc reads and writes it, jitted = plain,
expectations' life (made, matched, outliving their control connection's index entry, freed),
growth under a flood of commands, NAT rewrites and the sequence adjustment they cause."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from ctaccel.conntrack import Conntrack, action_row
from ctaccel.conntrack import ftp as F
from ctaccel.conntrack.layout import C_USED, ROW_CONN, X_ALG, ext_get, seq_skew
from ctaccel.conntrack.nat import spec_from_action
from ctaccel.conntrack.table import ST_EXP_LIVE, ST_EXP_USED
from ctaccel.ofproto.rule_actions import _parse_nat
from ctaccel.packet import key as K
from ctaccel.packet.parse import parse_frame
from support.oracle.frames import tcp

A, B, NAT4 = "10.1.1.1", "10.1.1.2", "10.1.1.240"


def _control_slot(ct) -> int:
    """The row of the (one) connection committed with an ALG helper."""
    return next(s for s in range(ct.capacity)
                if ct.conns[s, C_USED] == ROW_CONN and ext_get(ct.conns, s, X_ALG) & 3)  # fmt: skip


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("latin-1"), np.uint8).copy()


def _glibc_v4(text: str):
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        return -1


def _glibc_v6(text: str):
    try:
        raw = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        return None
    return tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))


V4_CASES = ["10.1.1.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.1.1.1", "1.1.1",
            "1.1.1.1.1", "1..1.1", ".1.1.1", "1.1.1.", "1.1.1.a", "", "1.1.1.00", "192.168.0.10"]  # fmt: skip
V6_CASES = ["::", "::1", "fd00::1", "fd00::f0", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
            "::ffff:1.2.3.4", "::1.2.3.4", "1::2::3", ":1::", "1:::2", "12345::", "fe80::",
            "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "FD00::A", "::g", "1:", ":",
            "2001:db8:0:0:1:0:0:1", "0:0:0:0:0:0:0:0", "1::1.2.3", "::1.2.3.4.5"]  # fmt: skip


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_addresses_are_read_as_glibc_reads_them(impl):
    v4 = F.parse_v4 if impl == "jit" else F.parse_v4.py_func
    v6 = F.parse_v6 if impl == "jit" else F.parse_v6.py_func
    rng = random.Random(7)
    v4_cases = V4_CASES + [".".join(str(rng.randrange(0, 300)) for _ in range(4))
                           for _ in range(200)]  # fmt: skip
    for text in v4_cases:
        b = _bytes(text)
        assert v4(b, 0, len(b)) == _glibc_v4(text), text
    v6_cases = V6_CASES + [socket.inet_ntop(socket.AF_INET6, rng.randbytes(16))
                           for _ in range(200)]  # fmt: skip
    for text in v6_cases:
        b = _bytes(text)
        out, words = np.zeros(4, np.int64), np.zeros(8, np.int64)
        ok = v6(b, 0, len(b), out, words)
        want = _glibc_v6(text)
        assert (tuple(int(x) for x in out) if ok else None) == want, text


def test_commas_read_as_dots_in_a_port_command():
    b = _bytes("10,1,1,1")
    assert F.parse_v4(b, 0, len(b)) == 0x0A010101


@pytest.mark.parametrize("impl", ["jit", "py"])
def test_addresses_are_written_as_glibc_writes_them(impl):
    v6 = F.format_v6 if impl == "jit" else F.format_v6.py_func
    v4 = F.format_v4 if impl == "jit" else F.format_v4.py_func
    rng = random.Random(11)
    samples = [bytes(16), bytes(15) + b"\x01", bytes(15) + b"\x02", bytes(10) + b"\xff\xff" +
               b"\x01\x02\x03\x04", bytes(12) + b"\x01\x02\x03\x04", b"\x20\x01" + bytes(14),
               b"\x00\x01" + bytes(12) + b"\x00\x01"]  # fmt: skip
    samples += [rng.randbytes(16) for _ in range(100)]
    samples += [
        bytes(b if rng.random() < 0.3 else 0 for b in rng.randbytes(16)) for _ in range(200)
    ]
    for raw in samples:
        words = np.array([int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4)])
        out = np.zeros(64, np.int64)
        n = v6(words, out, np.zeros(8, np.int64))
        assert bytes(out[:n].astype(np.uint8)).decode() == socket.inet_ntop(socket.AF_INET6, raw)
    for raw in [rng.randbytes(4) for _ in range(50)] + [bytes(4), b"\xff" * 4]:
        out = np.zeros(64, np.int64)
        n = v4(int.from_bytes(raw, "big"), 44, out)
        assert bytes(out[:n].astype(np.uint8)).decode() == socket.inet_ntoa(raw).replace(".", ",")


def _run(ct, frame: bytes, act, t: int, nat=None):
    key = np.zeros(K.KEY_WIDTH, np.int64)
    buf = np.frombuffer(frame, np.uint8).copy()
    parse_frame(buf, np.int64(1), key)
    ct.execute(buf, key, act, t, -1, nat)
    out = ct.last_frame if nat is not None else buf
    return K.format_ct_state(int(key[K.CT_STATE])), bytes(out), key


def _open(ct, act, cport=40000, nat=None, t=0):
    _run(ct, tcp("A", "B", cport, 21, "S", 999, 0), act, t, nat)
    _run(ct, tcp("B", "A", 21, cport, "SA", 4999, 1000, dst_ip=NAT4 if nat is not None else None),
         act, t + 1, nat)  # fmt: skip
    _run(ct, tcp("A", "B", cport, 21, "A", 1000, 5000), act, t + 2, nat)


def _port(addr: str, port: int) -> bytes:
    return f"PORT {addr.replace('.', ',')},{port >> 8},{port & 255}\r\n".encode()


def test_a_flood_of_commands_grows_the_table_and_the_control_connection_frees_it():
    ct = Conntrack()
    act = action_row(0, commit=True, alg="ftp")
    _open(ct, act)
    rows0 = ct.exps.shape[0]
    seq = 1000
    n = 3 * rows0
    for i in range(n):
        cmd = _port(A, 10000 + i)
        _run(ct, tcp("A", "B", 40000, 21, "PA", seq, 5000, cmd), act, 10 + i)
        seq += len(cmd)
    assert ct.exps.shape[0] > rows0
    assert int(ct.stats[ST_EXP_LIVE]) == n and ct.counters["alg_expectations"] == n
    assert ct.counters["alg_expectations_refused"] == 0
    # a repeated command makes nothing new
    _run(ct, tcp("A", "B", 40000, 21, "PA", seq, 5000, _port(A, 10000)), act, 10 + n)
    assert int(ct.stats[ST_EXP_LIVE]) == n
    # every announced port is expected: a data connection is +rel, a stranger's is not
    state, _f, _k = _run(ct, tcp("B", "A", 20, 10000 + n - 1, "S", 1, 0), act, 20 + n)
    assert state == "new|rel|trk"
    state, _f, _k = _run(ct, tcp("B", "A", 20, 9999, "S", 1, 0), act, 21 + n)
    assert state == "new|trk"
    # the control connection goes (flush): its expectations go; the data connection's parent
    # tuple stays until it goes too
    assert ct.flush() == 3
    assert int(ct.stats[ST_EXP_LIVE]) == 0 and int(ct.stats[ST_EXP_USED]) == 0


def test_a_data_connection_outlives_its_control_connection_with_its_parent_tuple():
    ct = Conntrack()
    act = action_row(0, commit=True, alg="ftp", mark=7)
    _open(ct, act)
    _run(ct, tcp("A", "B", 40000, 21, "PA", 1000, 5000, _port(A, 40001)), act, 5)
    data = action_row(0, commit=True)
    state, _f, key = _run(ct, tcp("B", "A", 20, 40001, "S", 1, 0), data, 6)
    assert state == "new|rel|trk" and int(key[K.CT_MARK]) == 7 and int(key[K.CT_TP_DST]) == 21
    # the control connection alone goes
    control = _control_slot(ct)
    from ctaccel.conntrack.lifecycle import delete_conn

    delete_conn(ct.tables, control)
    assert int(ct.stats[ST_EXP_LIVE]) == 0 and int(ct.stats[ST_EXP_USED]) == 1
    (line,) = ct.dump(7, verbose=True)
    assert "parent=(src=10.1.1.1,dst=10.1.1.2,sport=40000,dport=21)" in line
    assert "mark=7" in line
    # its packets stay related; a new announcement cannot be made (no control connection)
    state, _f, key = _run(ct, tcp("A", "B", 40001, 20, "SA", 9, 2), data, 8)
    assert state == "est|rel|rpl|trk" and int(key[K.CT_TP_DST]) == 21
    ct.flush()
    assert int(ct.stats[ST_EXP_USED]) == 0


def test_snat_rewrites_port_and_every_later_segment_is_adjusted_both_ways():
    ct = Conntrack()
    nat = spec_from_action(_parse_nat(f"src={NAT4}"))
    act = action_row(0, commit=True, alg="ftp")
    _open(ct, act, nat=nat)
    cmd = _port(A, 40001)
    _s, out, _k = _run(ct, tcp("A", "B", 40000, 21, "PA", 1000, 5000, cmd), act, 5, nat)
    assert _port(NAT4, 40001) in out and len(out) == len(tcp("A", "B", 1, 2, "PA", 0, 0, cmd)) + 2
    slot = _control_slot(ct)
    assert int(seq_skew(ct.conns, slot)) == 2
    seq_a, seq_b = 1000 + len(cmd), 5000
    for k in range(120):  # both ways, far past the rewrite: never invalid, numbers moved by 2
        msg = b"NOOP %d\r\n" % k
        state, out, _k = _run(ct, tcp("A", "B", 40000, 21, "PA", seq_a, seq_b, msg), act,
                              10 + 2 * k, nat)  # fmt: skip
        assert state == "est|trk|snat"
        assert int.from_bytes(out[38:42], "big") == seq_a + 2  # B sees A's numbers moved
        seq_a += len(msg)
        reply = b"200 %d\r\n" % k
        state, out, _k = _run(ct, tcp("B", "A", 21, 40000, "PA", seq_b, seq_a + 2, reply,
                                      dst_ip=NAT4), act, 11 + 2 * k, nat)  # fmt: skip
        assert state == "est|rpl|trk|dnat"
        assert int.from_bytes(out[42:46], "big") == seq_a  # and A sees B's acks moved back
        seq_b += len(reply)
    assert ct.counters["invalid_update"] == 0


def test_ftp_command_jitted_matches_plain_python():
    def run(fn):
        ct = Conntrack()
        nat = spec_from_action(_parse_nat(f"src={NAT4}"))
        act = action_row(0, commit=True, alg="ftp")
        _open(ct, act, nat=nat)
        frames = [tcp("A", "B", 40000, 21, "PA", 1000, 5000, c) for c in
                  (_port(A, 40001), b"PORT 10,1,1,3,1,2\r\n", b"port  10,1,1,1,1,3 x\r\n")]  # fmt: skip
        outs = []
        for i, f in enumerate(frames):
            key = np.zeros(K.KEY_WIDTH, np.int64)
            buf = np.zeros(len(f) + F.MAX_GROWTH, np.uint8)
            buf[: len(f)] = np.frombuffer(f, np.uint8)
            parse_frame(buf[: len(f)], np.int64(1), key)
            scr = np.zeros(96, np.int64)
            slot = _control_slot(ct)
            inv, n = fn(ct.tables, slot, buf, len(f), key, False, 0, 0, True, scr)
            outs.append((bool(inv), int(n), bytes(buf[:n]), i))
        return outs, ct.exps.copy(), ct.conns.copy()

    jit = run(F.ftp_command)
    py = run(F.ftp_command.py_func)
    assert jit[0] == py[0]
    assert np.array_equal(jit[1], py[1]) and np.array_equal(jit[2], py[2])
    assert [o[0] for o in jit[0]] == [False, True, False]


def test_expectations_are_listed_with_their_master_and_nat(tmp_path):
    from click.testing import CliRunner

    from ctaccel.cli import main
    from support.oracle.compare import write_inputs
    from support.oracle.scenarios_alg import ALG_SCENARIOS

    s = next(x for x in ALG_SCENARIOS if x.name == "ftp_active_snat_v4")
    flows, inputs = write_inputs(s, tmp_path)
    args = ["dump-conntrack", "--flows", str(flows), "--expectations"]
    for port, pcap in inputs:
        args += ["--in", f"{port}={pcap}"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "tcp,expect=(src=10.1.1.2,dst=10.1.1.240,dport=40021),"
        "master=(src=10.1.1.1,dst=10.1.1.2,sport=40020,dport=21),nat=(dst=10.1.1.1)"
    ]
    more = ["-m" if a == "--expectations" else a for a in args]
    more = CliRunner().invoke(main, more, catch_exceptions=False)
    assert "parent=(src=10.1.1.1,dst=10.1.1.2,sport=40020,dport=21)" in more.stdout
    assert "helper=ftp" in more.stdout
