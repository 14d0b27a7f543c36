"""Modalities: each kind of output GenLoop generates (image, text, ...) as one :class:`Modality` object.

``modalities["text"]`` is the text modality; an unknown name is a :class:`~genloop.errors.NotFoundError` that
lists the valid ones, never a silent default. A model family declares ``modality = "<name>"``; everything
that depends on it asks the registered object. A new modality is one package (``genloop/modalities/<name>/``
with at least ``__init__.py`` and ``modality.py``, its :class:`Modality` subclass) and one line here.
"""

from __future__ import annotations

from ..registry import Registry
from .base import REQUIRED_MODULES, Modality
from .image import ImageModality
from .music import MusicModality
from .text import TextModality

modalities: Registry[Modality] = Registry("modality")
modalities.register("image", ImageModality())
modalities.register("text", TextModality())
modalities.register("music", MusicModality())

__all__ = ["REQUIRED_MODULES", "Modality", "modalities"]
