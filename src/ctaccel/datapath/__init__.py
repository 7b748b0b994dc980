"""The datapath: the engines that run packets through rules and conntrack.

What: ``engine.DatapathEngine`` (compiled, modes ``recirc`` and ``assume-established``),
``reference.ReferenceEngine`` (plain Python, OVS's semantics spelled out) and the compiled
kernel in parts (kernel.py the batch loop, fastpath.py, install.py, vm.py, layout.py),
with warmup.py to compile or load the kernels before the first batch.

Design: data flows down: the datapath executes the programs ofproto/ translates (program.py
encoding) and calls up only through the upcall (xlate.translate).

Invariants: both engines give the same answers packet for packet (tests/equivalence).
"""
