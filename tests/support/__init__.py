"""Helpers shared by the tests (imported as ``from support import <module>``).

- hosts.py: the test network (hosts behind ports 1-4) and the ``(in_port, frame, now_ms)``
  packet tuple.
- conversations.py: ``TcpConversation``, both sides of one TCP connection, and its
  misbehaviours.
- random_traffic.py: random interleavings of many connections' lives, a jumping clock,
  hypothesis strategies, random batch sizes.
- workloads.py: the talk's workloads A and B (adapters over ``ctaccel.bench.workloads``, the
  product's generator) and workload A with attacks.
- rulesets.py + rules/*.flows: the rule sets, loaded by name.
- equivalence.py: runs the reference engine and a datapath engine over the same packets and
  reports the first divergence.
- xlate_exec.py: a plain-Python interpreter of datapath programs (translation tests).
- oracle/: drives Open vSwitch as the oracle, and the scenarios run through it.
"""
