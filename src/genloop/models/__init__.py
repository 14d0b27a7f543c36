"""Plain networks, one self-contained family per file. How they learn lives in ``genloop.systems``."""
