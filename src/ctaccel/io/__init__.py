"""Captures: classic pcap and pcapng read into memory, classic pcap written.

What: io/pcap.py maps a capture file and gives one buffer with per-packet offset, length and
timestamp arrays (read_capture), and streams frames into pcap files (PcapWriter).

Design: numpy arrays over the file's bytes; nothing is copied per packet to read.

Invariants: a bad capture is rejected whole with the file and the reason (InputError).
"""
