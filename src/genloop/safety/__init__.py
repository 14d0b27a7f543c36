"""Responsible generation: what made a piece of content, proof of it, and what keeps private data private.

One module per safeguard: provenance manifests signed with ed25519 (``provenance``), the text watermark
(``text_watermark``) and PII scrubbing on text ingest (``pii``).
"""
