"""Compiled kernels: the same answers without the compiler, and a cache that cannot go stale
or stop an import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import ctaccel.jit as jit

RUN_BOTH_MODES = textwrap.dedent(
    """
    import json
    from ctaccel.conntrack import Conntrack
    from ctaccel.datapath.engine import DatapathEngine
    from ctaccel.datapath.reference import ReferenceEngine
    from ctaccel.demo import TCP_FLOWS, UDP_FLOWS, tcp_packets, udp_packets
    from ctaccel.ofproto.rules import parse_flows

    out = {}
    for name, flows, pkts in (("udp", UDP_FLOWS, udp_packets()), ("tcp", TCP_FLOWS, tcp_packets())):
        frames = [f for _p, f, _w in pkts] * 2
        ports = [p for p, _f, _w in pkts] * 2
        now = [1000 + i for i in range(len(frames))]
        for mode in ("recirc", "assume-established"):
            eng = DatapathEngine(parse_flows(flows, "x"), mode=mode, batch_size=7)
            rs = eng.process_batch(frames, ports, now)
            out[name + "/" + mode] = {
                "packets": [[r.out_ports, r.ct_state, r.drop_reason, r.path] for r in rs],
                "conntrack": eng.conntrack.dump(now[-1]),
                "rules": eng.rule_counters(),
            }
        ref = ReferenceEngine(parse_flows(flows, "x"), Conntrack())
        rs = [ref.process(f, p, t) for f, p, t in zip(frames, ports, now)]
        out[name + "/reference"] = {
            "packets": [[r.out_ports, r.ct_state, r.drop_reason] for r in rs],
            "conntrack": ref.conntrack.dump(now[-1]),
            "rules": ref.rule_counters(),
        }
    print(json.dumps(out))
    """
)


def _run(code, env_extra):
    env = dict(os.environ, **env_extra)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_kernels_without_jit_give_the_jitted_answers_and_the_references():
    plain = _run(RUN_BOTH_MODES, {"NUMBA_DISABLE_JIT": "1"})
    compiled = _run(RUN_BOTH_MODES, {})
    assert plain == compiled
    for name in ("udp", "tcp"):
        ref = compiled[name + "/reference"]
        for mode in ("recirc", "assume-established"):
            got = compiled[f"{name}/{mode}"]
            assert [p[:3] for p in got["packets"]] == ref["packets"]
            assert got["conntrack"] == ref["conntrack"]
            assert [list(x) for x in got["rules"]] == ref["rules"]
    # the replayed half of the TCP conversation reuses cached entries in the fast mode
    paths = [p[3] for p in compiled["udp/assume-established"]["packets"]]
    assert "fast" in paths


def test_an_unwritable_cache_location_falls_back_and_still_imports(tmp_path):
    code = "import ctaccel.datapath.kernel, ctaccel.jit as j, json; print(json.dumps(j.CACHE_DIR))"
    env = {"NUMBA_CACHE_DIR": "/proc/ctaccel-cannot-write-here",
           "XDG_CACHE_HOME": "/proc/nor-here", "HOME": "/proc", "TMPDIR": str(tmp_path)}  # fmt: skip
    chosen = _run(code, env)
    assert chosen.startswith(str(tmp_path)) and jit.source_digest() in chosen


def test_cache_directory_is_named_after_the_sources():
    assert jit.source_digest() == jit.source_digest()
    assert jit.CACHE_DIR is None or jit.source_digest() in jit.CACHE_DIR


def test_prefetch_is_a_hint_that_compiles_to_a_prefetch_instruction():
    """prefetch/prefetch2 change no result, compiled or not, and are real prefetches."""
    import numpy as np

    @jit.njit(cache=False)
    def gather(a1, a2, idx):
        total = 0
        for k in range(idx.shape[0]):
            if k + 4 < idx.shape[0]:
                jit.prefetch(a1, idx[k + 4])
                jit.prefetch2(a2, idx[k + 4] % a2.shape[0], 3)
            total += a1[idx[k]] + a2[idx[k] % a2.shape[0], 3]
        return total

    rng = np.random.default_rng(1)
    a1 = rng.integers(0, 1000, 4096)
    a2 = rng.integers(0, 1000, (512, 8))
    idx = rng.integers(0, 4096, 300)
    want = int(sum(a1[i] + a2[i % 512, 3] for i in idx))
    assert int(gather(a1, a2, idx)) == want
    if not jit.JIT_DISABLED:
        assert int(gather.py_func(a1, a2, idx)) == want
        asm = "\n".join(gather.inspect_asm().values())
        assert "prefetch" in asm


def test_the_digest_follows_kernel_sources_only(tmp_path, monkeypatch):
    """A change to a file kernels read (ofproto/program.py's op codes) gives a fresh cache
    directory; a change to the rule parser does not."""
    import shutil
    from pathlib import Path

    pkg = tmp_path / "ctaccel"
    shutil.copytree(Path(jit.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.setattr(jit, "_PACKAGE_DIR", str(pkg))
    before = jit.source_digest()
    with open(pkg / "ofproto" / "rules.py", "a") as f:
        f.write("\n# not read by kernels\n")
    assert jit.source_digest() == before
    with open(pkg / "ofproto" / "program.py", "a") as f:
        f.write("\n# read by kernels\n")
    assert jit.source_digest() != before
