"""``genloop chat RUN``: a terminal conversation with a text run, streamed, with history and commands.

Interactive (standard input a terminal): ``you>`` prompts, the reply streams as it is sampled. Piped (standard
input not a terminal): one user message per line, each reply streamed to standard output on one line (a
newline inside a reply is written ``\\n``, a backslash ``\\\\``), so a script can drive it. Either way these
lines are commands rather than messages:

- ``/reset``: forget the conversation (the system message stays);
- ``/system TEXT``: set the system message (``/system`` alone removes it) and start over;
- ``/exit`` (or ``/quit``, or end of input): leave.

Reply ``k`` (counting from 0 over the session) is sampled with seed ``seed + k``, so a session replays exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import typer

from ..errors import ConfigError

HELP = "/reset: start over; /system TEXT: set the system message; /exit: leave"


class ChatSession:
    """The state of a terminal chat: the system message, the turns so far, and the replies' seeds."""

    def __init__(
        self, pipe: Any, system: str | None, seed: int, sampling: dict[str, Any], knowledge: Any = None
    ) -> None:
        self.pipe, self.system, self.seed, self.sampling, self.knowledge = pipe, system, seed, sampling, knowledge
        self.turns: list[dict[str, str]] = []
        self.replies = 0

    def messages(self, user: str) -> list[dict[str, str]]:
        system = self.system
        if self.knowledge is not None:
            system = self.knowledge.system_message(user, system)
        head = [{"role": "system", "content": system}] if system else []
        return head + self.turns + [{"role": "user", "content": user}]

    def command(self, line: str) -> str | None:
        """Handle a ``/`` command; returns a note to show, "exit" to leave, or None when ``line`` is a message."""
        word, _, rest = line.strip().partition(" ")
        if word in ("/exit", "/quit"):
            return "exit"
        if word == "/reset":
            self.turns = []
            return "(conversation reset)"
        if word == "/system":
            self.system, self.turns = (rest.strip() or None), []
            return f"(system message {'set' if self.system else 'removed'}; conversation reset)"
        if word == "/help":
            return HELP
        if line.startswith("/"):
            return f"(unknown command {word}; {HELP})"
        return None

    def reply(self, user: str, show: Any) -> str:
        """The assistant's reply to ``user`` after the turns so far, each piece handed to ``show`` as it comes."""
        seed = self.seed + self.replies
        self.replies += 1
        text = ""
        for piece in self.pipe.chat(self.messages(user), seed=seed, stream=True, **self.sampling):
            text += piece
            show(piece)
        text = text.strip()
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": text or "…"}]
        return text


def run_chat(session: ChatSession, stdin: TextIO, stdout: TextIO, stderr: TextIO, interactive: bool) -> None:
    def write(piece: str) -> None:
        stdout.write(piece)
        stdout.flush()

    def show(piece: str) -> None:  # piped: one line per reply, a newline inside it written as \\n
        write(piece if interactive else piece.replace("\\", "\\\\").replace("\n", "\\n"))

    if interactive:
        stderr.write(f"chatting with {session.pipe.info.get('run_id')} ({HELP})\n")
    while True:
        if interactive:
            stderr.write("you> ")
            stderr.flush()
        line = stdin.readline()
        if not line:  # end of input
            if interactive:
                stderr.write("\n")
            return
        line = line.rstrip("\n")
        if not line.strip():
            continue
        note = session.command(line)
        if note == "exit":
            return
        if note is not None:
            stderr.write(note + "\n")
            continue
        if interactive:
            write("assistant> ")
        try:
            text = session.reply(line, show)
        except ConfigError as e:
            write("\n")
            stderr.write(f"error: {e}\n")
            continue
        write("\n")
        if session.knowledge is not None:
            given = getattr(session.knowledge, "last", [])
            cited = session.knowledge.cited(text)
            names = ", ".join(f"[{given.index(p) + 1}] {p.name}" for p in cited) or "none found"
            stderr.write(f"sources: {names}\n")


def chat_command(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix, or the run's folder) of a text run."),
    system: str | None = typer.Option(None, "--system", help="The system message to start with."),
    seed: int = typer.Option(0, "--seed", help="Reply k of the session uses seed + k."),
    max_tokens: int = typer.Option(200, "--max-tokens", help="New tokens per reply at most."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 is greedy; higher: more random."),
    top_k: int = typer.Option(0, "--top-k", help="Sample from the k likeliest tokens (0: off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1: off)."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="Above 1 discourages repeats."),
    stop: list[str] = typer.Option([], "--stop", help="Also stop a reply before this text (repeatable)."),
    knowledge: Path | None = typer.Option(
        None,
        "--knowledge",
        help="A folder of documents: the passages most relevant to each message (BM25) go into the system "
        "message, and the reply may cite them as [1], [2], ...",
    ),
    passages: int = typer.Option(3, "--passages", help="With --knowledge: passages per message."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last, or best."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Run store folder."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Chat with a text run in the terminal: replies stream as they are sampled; /reset, /system TEXT, /exit.
    Without a terminal (piped input) each line is one user message and each reply is printed as one line."""
    from .. import api

    pipe = api.load(run_id, device=device, runs_dir=runs_dir, checkpoint=checkpoint)
    if not hasattr(pipe, "chat"):
        raise ConfigError(f"{run_id} is not a text run; genloop chat talks to language models")
    sampling = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
        "stop": list(stop),
    }
    pipe.params(**sampling)  # bad settings fail now, before the first message
    index = None
    if knowledge is not None:
        from ..modalities.text.knowledge import KnowledgeBase

        index = KnowledgeBase.from_folder(knowledge, k=passages)
        print(f"knowledge: {index.describe()}", file=sys.stderr, flush=True)
    session = ChatSession(pipe, system, seed, sampling, knowledge=index)
    run_chat(session, sys.stdin, sys.stdout, sys.stderr, interactive=sys.stdin.isatty())


__all__ = ["ChatSession", "chat_command", "run_chat"]
