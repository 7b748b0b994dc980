"""Malformed capture and rule files: one clear error or the packets' verdicts, never a traceback.

What: ``capture_cases(rng, n)`` makes pcap and pcapng files broken the ways real ones are
(cut inside a record or a header, caplen past the snaplen or past the file, bad magic,
unknown and oversized pcapng blocks, block lengths that disagree, zero-length and 64 KB
frames, empty files); ``rule_cases(rng, n)`` makes rule files from the fuzzing rules with
characters dropped, tokens inserted, lines doubled or cut, numbers out of range.
``check_captures`` / ``check_rules`` run each through what ``ctaccel replay`` runs (reading
every packet, replaying the rules) and sort the outcomes: accepted, rejected with one
``CtaccelError`` line (a rule file's naming ``file:line``), or a failure (any other
exception, or a rule error without its line), which is what the campaign reports.

Design: files are written into a temporary directory and removed; the replay of an accepted
capture uses the reference engine (the verdicts, not the speed, are the point here; the frame
campaign compares the modes).
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import traceback

from ctaccel.errors import CtaccelError, RuleError
from ctaccel.fuzz.mutate import mutate
from ctaccel.fuzz.traffic import RULES, seed_traffic

PCAP_MAGIC = 0xA1B2C3D4


def _pcap(frames, snaplen=65535, caplens=None, magic=PCAP_MAGIC) -> bytes:
    out = bytearray(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, 1))
    for i, f in enumerate(frames):
        cap = len(f) if caplens is None else caplens[i]
        out += struct.pack("<IIII", 1000 + i, 0, cap, len(f)) + f
    return bytes(out)


def _block(kind: int, body: bytes, length: int | None = None) -> bytes:
    body = body.ljust(-(-len(body) // 4) * 4, b"\x00")
    n = 12 + len(body) if length is None else length
    return struct.pack("<II", kind, n) + body + struct.pack("<I", n)


def _pcapng(frames, extra=()) -> bytes:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535))
    out = bytearray(shb + idb)
    for i, f in enumerate(frames):
        for kind, body, length in extra:
            if i == 0:
                out += _block(kind, body, length)
        epb = struct.pack("<IIIII", 0, 0, 1000 + i, len(f), len(f)) + f
        out += _block(6, epb)
    return bytes(out)


def capture_cases(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """``n`` (name, file bytes) pairs, each broken one way (some not at all)."""
    frames = [f for _p, f, _t in seed_traffic(rng, 40)]
    cases = []
    for i in range(n):
        kind = i % 12
        good = _pcap(frames) if rng.random() < 0.5 else _pcapng(frames)
        if kind == 0:
            cases.append(("cut", good[: rng.randrange(len(good))]))
        elif kind == 1:
            caps = [len(f) for f in frames]
            caps[rng.randrange(len(caps))] = rng.choice([70000, 262145, 1 << 31, 0xFFFFFFFF])
            cases.append(("caplen_past_snaplen", _pcap(frames, snaplen=rng.choice([64, 65535]),
                                                       caplens=caps)))  # fmt: skip
        elif kind == 2:
            cases.append(("bad_magic", struct.pack("<I", rng.getrandbits(32)) + good[4:]))
        elif kind == 3:
            extra = [
                (rng.choice([0x80000001, 0x0BAD, 99, 0x40000000]), bytes(rng.randrange(64)), None)
            ]
            cases.append(("pcapng_unknown_block", _pcapng(frames, extra)))
        elif kind == 4:
            extra = [(rng.choice([3, 0x0BAD, 6]), b"\x00" * 16,
                      rng.choice([8, 13, 1 << 30, 0xFFFFFFF0, 0]))]  # fmt: skip
            cases.append(("pcapng_bad_block_length", _pcapng(frames, extra)))
        elif kind == 5:
            odd = [b"", b"\x00" * rng.choice([1, 13, 14]), bytes(65535),
                   frames[0] + bytes(65535 - len(frames[0]))]  # fmt: skip
            cases.append(("odd_frames", (_pcap if rng.random() < 0.5 else _pcapng)(odd + frames)))
        elif kind == 6:
            cases.append(("empty", b"" if rng.random() < 0.5 else good[: rng.choice([4, 23, 24])]))
        elif kind == 7:
            body = bytearray(good)
            for _ in range(rng.randint(1, 10)):
                body[rng.randrange(len(body))] = rng.getrandbits(8)
            cases.append(("flipped", bytes(body)))
        elif kind == 8:
            mutated = [mutate(rng, f)[0] for f in frames]
            cases.append(("mutated_frames", _pcap(mutated)))
        elif kind == 9:
            cases.append(("big_endian_cut", struct.pack(">IHHiIII", PCAP_MAGIC, 2, 4, 0, 0,
                                                         65535, 1) + good[24:60]))  # fmt: skip
        elif kind == 10:
            cases.append(("link_type", good[:20] + struct.pack("<I", rng.choice([0, 101, 127]))
                          + good[24:]))  # fmt: skip
        else:
            cases.append(("good", good))
    return cases


_TOKENS = ("ct(", ")", "commit", "nat(src=", "table=", "priority=", "actions=", ",", "=",
           "zone=", "ct_state=", "+trk", "-est", "output:", "in_port=", "tcp", "0x", "/",
           "99999999999999999999", "-1", "exec(", "set_field:", "->", "ct_mark", "alg=", "ftp",
           "\x00", "é", "resubmit(,", "goto_table:", "ip", "ipv6", "nw_src=", "10.0.0.0/33",
           "tp_dst=", "65536", " ", "\t", "#", "conjunction(", "move:", "[]", "load:")  # fmt: skip


def rule_cases(rng: random.Random, n: int) -> list[tuple[str, str]]:
    lines = RULES.splitlines()
    cases = []
    for _ in range(n):
        ls = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(ls))
            line = ls[i]
            how = rng.randrange(6)
            pos = rng.randrange(len(line) + 1)
            if how == 0:
                line = line[:pos] + line[pos + rng.randint(1, 8) :]
            elif how == 1:
                line = line[:pos] + rng.choice(_TOKENS) + line[pos:]
            elif how == 2:
                ls.insert(i, line)
            elif how == 3:
                line = line[:pos]
            elif how == 4:
                line = line + "," + rng.choice(_TOKENS) * rng.randint(1, 50)
            else:
                line = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 12)))
            ls[i] = line
        cases.append(("rules", "\n".join(ls) + "\n"))
    return cases


def check_captures(cases, flows_text: str = RULES) -> dict:
    """Replay each capture (reference engine); outcomes and the failures (tracebacks)."""
    from ctaccel.replay import replay

    out = {"tried": len(cases), "accepted": 0, "rejected": 0, "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        flows = os.path.join(tmp, "fuzz.flows")
        with open(flows, "w") as f:
            f.write(flows_text)
        for i, (name, data) in enumerate(cases):
            path = os.path.join(tmp, f"case{i}.pcap")
            with open(path, "wb") as f:
                f.write(data)
            try:
                replay(flows, [(1, path)], os.path.join(tmp, f"out{i}"), mode="reference")
                out["accepted"] += 1
            except CtaccelError as e:
                if "\n" in str(e) or not str(e):
                    out["failures"].append({"case": name, "error": repr(e)})
                out["rejected"] += 1
            except Exception:  # noqa: BLE001 - what the campaign looks for
                out["failures"].append({"case": name, "traceback": traceback.format_exc(limit=6),
                                        "head": data[:64].hex()})  # fmt: skip
    return out


def check_rules(cases, packets: int = 30) -> dict:
    """Parse each rule file and, when it is accepted, replay ``packets`` packets of seed
    traffic through it (reference engine); outcomes and the failures."""
    from ctaccel.conntrack import Conntrack
    from ctaccel.datapath.reference import ReferenceEngine
    from ctaccel.ofproto.rules import parse_flows

    traffic = seed_traffic(random.Random(0), packets)
    out = {"tried": len(cases), "accepted": 0, "rejected": 0, "failures": []}
    for _name, text in cases:
        try:
            rules = parse_flows(text, "fuzz.flows")
        except RuleError as e:
            if not str(e).startswith("fuzz.flows:") or not e.line or "\n" in str(e):
                out["failures"].append({"error": str(e), "text": text})
            out["rejected"] += 1
            continue
        except Exception:  # noqa: BLE001 - what the campaign looks for
            out["failures"].append({"traceback": traceback.format_exc(limit=6), "text": text})
            continue
        try:
            eng = ReferenceEngine(rules, Conntrack())
            for port, frame, now in traffic:
                eng.process(frame, port, now)
            out["accepted"] += 1
        except Exception:  # noqa: BLE001
            out["failures"].append({"traceback": traceback.format_exc(limit=6), "text": text})
    return out
