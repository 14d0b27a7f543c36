"""GenLoop: data -> train -> generate -> evaluate -> feedback -> train again.

The public API (``genloop.train``, ``genloop.load``, ...) is imported lazily, so ``import genloop``
stays fast and the CLI's ``--help`` does not wait for PyTorch.
"""

__version__ = "0.1.0"

_API = (
    "train",
    "resume",
    "load",
    "generate",
    "generate_text",
    "generate_music",
    "edit",
    "verify",
    "evaluate",
    "evaluate_restoration",
    "sweep",
    "compare",
    "report",
    "resolve_config",
    "dataset_info",
)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in ("GenLoopError",):
        from .errors import GenLoopError

        return GenLoopError
    raise AttributeError(f"module 'genloop' has no attribute {name!r}")


__all__ = ["__version__", *_API, "GenLoopError"]
