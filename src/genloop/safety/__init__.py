"""Responsible generation: what made a piece of content, proof of it, and what keeps private data private.

One module per safeguard: provenance manifests signed with ed25519 (``provenance``), the text watermark
(``text_watermark``) and PII scrubbing on text ingest (``pii``).

- ``text_watermark``: the green-list watermark of Kirchenbauer et al. (2023) as a logits processor of the
  shared text sampler (``pipe(..., watermark=True)``, ``genloop generate --watermark``, the server's
  ``watermark: true``), keyed by a secret kept in the run store; :func:`~.text_watermark.detect_text` and
  :func:`~.text_watermark.detect_in_store` give a text's z-score and p-value.
- ``pii``: e-mails, phone numbers, Chinese ID and bank-card numbers and IP addresses replaced by
  placeholders (:func:`~.pii.scrub`); ``data.scrub_pii=true`` applies it as a text corpus is read.
"""
