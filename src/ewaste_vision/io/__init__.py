"""Writing files safely: nothing a run produced is ever left half-written."""
