"""ewaste-vision: see into electronic waste.

Classify devices and boards, explain what the model looked at, and value what a board carries.
The command line (`ewaste`) is a thin layer over this package's public functions.
"""

__version__ = "0.1.0"
