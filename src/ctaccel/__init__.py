"""ctaccel: an Open vSwitch-compatible software datapath with connection tracking.

See docs/architecture.md for the layers and README.md for the commands.
"""

__version__ = "0.1.0"
