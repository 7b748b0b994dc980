"""Packets: the flow key layout, the compiled parser, checksums and frame builders.

What: key.py (flow key columns and ct_state bits), parse.py (jitted parse_frame: frame ->
key, as OVS's miniflow_extract), checksum.py, build.py (frames for tests, demo, workloads).

Design: the key is a flat int64 array; everything above reads it by named column.

Invariants: parsing never raises on bytes; a malformed frame sets PARSE_FLAGS bits.
"""
