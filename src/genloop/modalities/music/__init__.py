"""Music building blocks: ingest (sources, dataset), tokenise (tokenizer), output (render), judge (metrics, features).

Everything speaks :class:`~genloop.modalities.music.piece.Piece`: one symbolic piece (a symusic ``Score`` in
ticks) plus the labels a generative loop needs (id, where it came from, style, key, time signature, tempo).
:mod:`.modality` (:class:`MusicModality`, registered in :mod:`genloop.modalities`) wires them into the loop.
"""

from .modality import MusicModality
from .piece import Piece, piece_from_score

__all__ = ["MusicModality", "Piece", "piece_from_score"]
