"""OpenFlow: rule files, the classifier and translation of a packet's pass to a program.

What: rules.py (with rule_match.py, rule_actions.py) parses ``ovs-ofctl`` flow files;
classifier.py holds FlowTables and looks rules up; xlate.py translates one pass of a packet
into a program and its megaflow mask; program.py owns that program encoding and the drop
reasons; dumpflows.py prints ``dump-flows``; actions.py and fields.py are the vocabulary.

Design: this layer knows nothing of the datapath that runs its programs.

Invariants: a bad rule file is rejected whole with ``file:line`` and the reason.
"""
