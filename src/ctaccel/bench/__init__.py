"""Benchmark support: the talk's workloads (``workloads.generate``) and ``ctaccel gen``.

What: captures and rule files that reproduce the measurements of the OVS-DPDK talk
(workload A: established TCP flows only; B: A plus unidirectional flows whose SYN is
retransmitted every round, so about one packet in three is NEW).

Design: generation is plain numpy over per-flow template frames; nothing here is on the
datapath. Importing the package imports nothing heavy.
"""
