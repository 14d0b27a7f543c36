"""Responsible generation: what made a piece of content, proof of it, and what keeps private data private.

One module per safeguard: provenance manifests signed with ed25519 (``provenance``), the text watermark
(``text_watermark``), the image and MIDI watermarks (``image_watermark``, ``music_watermark``) and PII
scrubbing on text ingest (``pii``).

- ``text_watermark``: the green-list watermark of Kirchenbauer et al. (2023) as a logits processor of the
  shared text sampler (``pipe(..., watermark=True)``, ``genloop generate --watermark``, the server's
  ``watermark: true``), keyed by a secret kept in the run store; :func:`~.text_watermark.detect_text` and
  :func:`~.text_watermark.detect_in_store` give a text's z-score and p-value.
- ``image_watermark``: an invisible mark (keyed dither modulation of low-frequency DCT projections of the
  luminance) carrying the hash of the generation id in every generated PNG, put in before signing, indexed in
  the run store; ``genloop verify`` reads it back, also from a stripped PNG. ``--no-watermark`` /
  ``watermark=False`` turn it off. ``music_watermark``: the same hash in the parity of the note velocities.
- ``pii``: e-mails, phone numbers, Chinese ID and bank-card numbers and IP addresses replaced by
  placeholders (:func:`~.pii.scrub`); ``data.scrub_pii=true`` applies it as a text corpus is read.
"""
