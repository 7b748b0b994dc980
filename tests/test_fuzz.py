"""The fuzzing campaign's CI slice, and checks that the campaign can see what it looks for.

A slice of ``ctaccel fuzz``: mutated frames among live connections through the reference
engine and both compiled modes (no crash, no divergence, every packet a verdict), malformed
captures and fuzzed rule files (one clear error or the verdicts). Then the campaign is shown
a divergence and a crash it must report, and the mutations are checked on their own (they
never raise, they reach the state they are meant to, checksums fixed are right).
"""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from ctaccel.cli import main
from ctaccel.fuzz import campaign, files
from ctaccel.fuzz import mutate as M
from ctaccel.fuzz.traffic import seed_traffic
from ctaccel.packet import build as B
from ctaccel.packet.parse import parse_frame


@pytest.fixture(scope="module")
def slice_report():
    return campaign.run_campaign(frames=24_000, seed=11, round_size=8_000)


def test_mutated_frames_give_the_same_results_in_the_three_engines(slice_report):
    r = slice_report
    assert r.frames >= 24_000 and r.rounds == 3
    assert r.n_crashes == 0, r.crashes
    assert r.n_divergences == 0, r.divergences
    assert r.unnamed_drops == 0
    # every mutation was tried, and the mutated frames reached conntrack's every answer:
    # invalid, new, established both ways, related, NAT'd, and the drops before it
    assert set(r.by_mutation) == set(M.MUTATIONS)
    assert min(r.by_mutation.values()) >= 100
    states = " ".join(r.verdicts)
    for word in ("inv|trk", "new|trk", "est|trk", "est|rpl|trk", "rel|", "snat", "dnat",
                 "rx_invalid", "ipf_held", "rule_drop", "forwarded"):  # fmt: skip
        assert word in states, (word, r.verdicts)


def test_a_divergence_is_reported_with_its_round_saved_for_replay(monkeypatch, tmp_path):
    from ctaccel.datapath.engine import DatapathEngine

    real = DatapathEngine.process_batch

    def wrong_once(self, frames, in_ports, now_ms):
        out = real(self, frames, in_ports, now_ms)
        if self.mode == "assume-established" and len(out) > 40:
            out[40].ct_state = "inv|trk" if out[40].ct_state != "inv|trk" else "new|trk"
        return out

    monkeypatch.setattr(DatapathEngine, "process_batch", wrong_once)
    r = campaign.run_campaign(frames=600, seed=3, round_size=600, out_dir=str(tmp_path))
    assert r.n_divergences == 1 and r.n_crashes == 0
    d = r.divergences[0]
    assert d["mode"] == "assume-established" and d["packet"] == 40 and d["frame"]
    assert r.saved == [str(tmp_path / "round-0")]
    saved = sorted(p.name for p in (tmp_path / "round-0").iterdir())
    assert "fuzz.flows" in saved and any(n.endswith(".pcap") for n in saved)


def test_a_crash_is_reported_and_the_campaign_goes_on(monkeypatch):
    from ctaccel.datapath.engine import DatapathEngine

    real = DatapathEngine.process_batch
    calls = {"n": 0}

    def crash_once(self, frames, in_ports, now_ms):
        if self.mode == "recirc":
            calls["n"] += 1
            if calls["n"] == 2:  # round 0's second batch
                raise IndexError("boom")
        return real(self, frames, in_ports, now_ms)

    monkeypatch.setattr(DatapathEngine, "process_batch", crash_once)
    r = campaign.run_campaign(frames=1200, seed=5, round_size=600, batch=256)
    assert r.n_crashes == 1 and r.crashes[0]["engine"] == "recirc"
    assert r.crashes[0]["round"] == 0 and r.crashes[0]["packet"] == 256
    assert "IndexError: boom" in r.crashes[0]["traceback"]
    # the rest of round 0 is not compared for recirc (its state is lost); round 1 runs
    assert r.rounds == 2 and r.n_divergences == 0


def test_malformed_captures_are_replayed_or_refused_in_one_line():
    out = files.check_captures(files.capture_cases(random.Random(7), 48))
    assert out["failures"] == []
    assert out["accepted"] >= 10 and out["rejected"] >= 10


def test_fuzzed_rule_files_are_refused_with_file_and_line_or_run():
    out = files.check_rules(files.rule_cases(random.Random(8), 400))
    assert out["failures"] == []
    assert out["accepted"] >= 10 and out["rejected"] >= 100


def test_a_tab_in_actions_is_a_blank_as_in_ovs_not_a_hang():
    from ctaccel.errors import RuleError
    from ctaccel.ofproto.rules import parse_flows

    assert parse_flows("ip,actions=drop\t")[0].actions == []
    with pytest.raises(RuleError, match=":1:"):
        parse_flows("ip,actions=ct(table=\t1,zone=1)")  # OVS: unknown table


@pytest.mark.parametrize("name", sorted(M.MUTATIONS))
def test_each_mutation_takes_any_bytes(name):
    rng = random.Random(name)
    frames = [f for _p, f, _t in seed_traffic(rng, 300)]
    frames += [f[: rng.randrange(len(f) + 1)] for f in frames]  # every length of the headers
    frames += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(100))) for _ in range(100)]
    for f in frames:
        out = M.MUTATIONS[name](rng, f)
        assert isinstance(out, bytes) and len(out) <= M.MAX_FRAME


def test_fixed_checksums_are_the_builders():
    rng = random.Random(2)
    for _p, frame, _t in seed_traffic(rng, 300):
        l3, et, l4, proto = M.layout(frame)
        if l4 < 0 or proto not in (1, 6, 17, 58):
            continue
        broken = bytearray(frame)
        where = {6: 16, 17: 6, 58: 2, 1: 2}[proto]
        if (et == B.ETH_P_IP and int.from_bytes(frame[l3 + 6 : l3 + 8], "big") & 0x3FFF) or (
            et == B.ETH_P_IPV6 and frame[l3 + 6] == 44
        ):
            continue  # fragments keep their L4 checksum
        broken[l4 + where] ^= 0xFF
        if et == B.ETH_P_IP:
            broken[l3 + 10] ^= 0xFF
        assert M.fix_checksums(bytes(broken)) == frame


def test_options_soup_is_parsed_past_the_options():
    """An IPv4 options soup with checksums fixed still reaches the L4 header (the parser
    finds the ports): the mutation tests option handling, not the header checksum."""
    rng = random.Random(4)
    frame = B.tcp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.1.1", "10.0.2.1",
                        1234, 80, "S", 7, 0)  # fmt: skip
    import numpy as np

    from ctaccel.packet.key import KEY_WIDTH, TP_DST

    for _ in range(50):
        soup = M.fix_checksums(M.ip_options(rng, frame))
        key = np.zeros(KEY_WIDTH, np.int64)
        parse_frame(np.frombuffer(soup, np.uint8), 1, key)
        assert key[TP_DST] == 80


def test_fuzz_command_writes_its_report(tmp_path):
    out = tmp_path / "fuzz.json"
    res = CliRunner().invoke(main, ["fuzz", "--frames", "2000", "--round-size", "1000",
                                    "--files", "24", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["frames_campaign"]["frames"] >= 2000
    assert report["frames_campaign"]["divergences"] == 0
    assert report["captures"]["tried"] == 24 and report["rule_files"]["tried"] == 24
    assert "0 crashes, 0 divergences" in res.output


def test_fuzz_command_refuses_a_bad_rule_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.flows"
    bad.write_text("table=0,actions=drop\ntable=0,actions=ct(table=x)\n")
    res = CliRunner().invoke(main, ["fuzz", "--flows", str(bad), "--frames", "10"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ctaccel: error: {bad}:2: "), lines
