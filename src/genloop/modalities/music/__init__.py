"""Music building blocks: ingest (sources, dataset), tokenise (tokenizer), output (render), judge (metrics, features).

Everything speaks :class:`~genloop.modalities.music.piece.Piece`: one symbolic piece (a symusic ``Score`` in
ticks) plus the labels a generative loop needs (id, where it came from, style, key, time signature, tempo).
Nothing is registered here; a modality registry wires these modules into the loop.
"""

from .piece import Piece, piece_from_score

__all__ = ["Piece", "piece_from_score"]
