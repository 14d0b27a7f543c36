"""What ``genloop generate`` does with the text-only options and with the prompt it echoes.

Why its own module: ``main.py`` parses arguments; deciding which options a non-text run must refuse (rather
than silently ignore) and how much of a long prompt is worth echoing are small policies with their own tests.
"""

from __future__ import annotations

ECHO_MAX = 1000  # characters of a prompt echoed before the continuation; longer prompts show their end only
ECHO_TAIL = 300  # the end of a long prompt that is shown: what the continuation follows on from

# option -> the value that means "not given" (Typer gives these defaults when the option is absent)
_TEXT_DEFAULTS: dict[str, object] = {
    "--prompt": None,
    "--stop": [],
    "--watermark": False,
    "--max-tokens": None,
    "--repetition-penalty": 1.0,
    "--presence-penalty": 0.0,
    "--frequency-penalty": 0.0,
    "--beams": 1,
    "--no-stream": False,
    "--compile": False,
    "--form": None,
    "--acrostic": None,
    "--no-rhyme": False,
}


def text_only_given(**values: object) -> list[str]:
    """The text-only options among ``values`` (keyword names as in ``generate``: ``max_tokens``, ``compile_``)
    that were given, i.e. differ from their absent value: a run that makes images or music must refuse them."""
    given = []
    for option, absent in _TEXT_DEFAULTS.items():
        key = option.lstrip("-").replace("-", "_")
        key = "compile_" if key == "compile" else key
        if key in values and values[key] != absent and values[key] is not None:
            given.append(option)
    return given


def echo(prompt: str) -> str:
    """The prompt as echoed before its continuation: whole up to :data:`ECHO_MAX` characters, else a note on
    its own line saying how much is left out, then the last :data:`ECHO_TAIL` characters."""
    if len(prompt) <= ECHO_MAX:
        return prompt
    left_out = len(prompt) - ECHO_TAIL
    return f"[prompt of {len(prompt):,} characters: the first {left_out:,} are not echoed]\n...{prompt[-ECHO_TAIL:]}"
