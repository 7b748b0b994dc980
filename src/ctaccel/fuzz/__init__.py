"""Fuzzing: mutated frames (mutate.py) among live connections (traffic.py) through the
reference engine and both compiled modes, which must agree (campaign.py); malformed capture
and rule files, which must give one clear error or OVS's verdict (files.py)."""
