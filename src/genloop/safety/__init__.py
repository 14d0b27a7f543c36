"""Responsible generation: what made a piece of content, proof of it, and what keeps private data private.

One module per safeguard: provenance manifests signed with ed25519 (``provenance``), the text watermark
(``text_watermark``), the image and MIDI watermarks (``image_watermark``, ``music_watermark``), PII scrubbing on
text ingest (``pii``) and moderation of prompts and outputs (``moderation``).

- ``text_watermark``: the green-list watermark of Kirchenbauer et al. (2023) as a logits processor of the
  shared text sampler (``pipe(..., watermark=True)``, ``genloop generate --watermark``, the server's
  ``watermark: true``), keyed by a secret kept in the run store; :func:`~.text_watermark.detect_text` and
  :func:`~.text_watermark.detect_in_store` give a text's z-score and p-value.
- ``image_watermark``: an invisible mark (keyed dither modulation of low-frequency DCT projections of the
  luminance) carrying a hash of the unmarked content (its content id) in every generated PNG, put in before
  signing, indexed in the run store; ``genloop verify`` reads it back, also from a stripped PNG. ``--no-watermark`` /
  ``watermark=False`` turn it off. ``music_watermark``: the same hash in the parity of the note velocities.
- ``pii``: e-mails, phone numbers, Chinese ID and bank-card numbers and IP addresses replaced by
  placeholders (:func:`~.pii.scrub`); ``data.scrub_pii=true`` applies it as a text corpus is read.
- ``moderation``: English (whole-word) and Chinese (substring) blocklists and regex rules on case- and
  width-normalised text, each rule with an id, a category and an action (block or flag); a small built-in list
  plus rule files (``GENLOOP_MODERATION_RULES``, ``genloop generate --rules``, the server's ``moderation_rules``);
  optional classifier and image-check hooks (:func:`~.moderation.register_text_classifier`,
  :func:`~.moderation.register_image_check`; none by default). Enforced in the pipelines (a blocked prompt
  raises :class:`~.moderation.ModerationBlocked`, a blocked text is withheld with ``finish_reason``
  ``content_filter``), the CLI (one error line, exit 2), the server (400 with code ``content_filter``) and
  the studio (the reason in the error banner); every decision is a line of ``<runs>/moderation.jsonl``.
  ``GENLOOP_MODERATION=off`` turns it off for a deployment.
"""
