"""``genloop feedback``: rate and compare generations, export them for TRL, train a reward model and use it
(rerank, fine-tune, select), or measure the whole loop with a scripted rater. Thin: parse, call, print."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..modalities import modalities

feedback_app = typer.Typer(help="Ratings, preferences, reward models and the feedback loop.", no_args_is_help=True)

out = Console(highlight=False)
Db = typer.Option(None, "--db", help="Studio database URL (default: sqlite:///<runs dir>/studio.sqlite).")
RunsDir = typer.Option(None, "--runs-dir", help="Run store folder (default: $GENLOOP_RUNS_DIR or ./runs).")
RewardDir = typer.Option(None, "--reward", help="Reward model folder (default: <runs>/rewards/latest).")
Prompt = typer.Option("", "--prompt", help="Text models: the prompt.")
MaxTokens = typer.Option(64, "--max-tokens", help="Text models: tokens per completion.")
ClassLabel = typer.Option(None, "--class", help="Conditional image models: the class.")
Temperature = typer.Option(None, "--temperature", help="Text and music models: sampling temperature.")
TopP = typer.Option(None, "--top-p", help="Text and music models: nucleus sampling mass.")
Bars = typer.Option(None, "--bars", help="Music models: bars per piece (default 16).")
Key = typer.Option(None, "--key", help="Music models: e.g. 'F major' (default: the model draws one).")
TimeSignature = typer.Option(None, "--time-signature", help="Music models: e.g. 3/4 (default: the model's draw).")
Style = typer.Option(None, "--style", help="Music models: a style the model was trained on.")
PromptMidi = typer.Option(None, "--prompt-midi", help="Music models: a MIDI file each piece continues.")
PromptBars = typer.Option(None, "--prompt-bars", help="Music models: bars of --prompt-midi to continue.")


def _store(db: str | None, runs_dir: Path | None):
    from ..feedback.store import FeedbackStore

    return FeedbackStore(url=db, runs=runs_dir)


def _reward(path: Path | None, runs_dir: Path | None):
    from ..feedback.reward import RewardModel, default_reward_dir

    return RewardModel.load(path or default_reward_dir(runs_dir))


def _generate_options(pipe: object, prompt: str, max_tokens: int, **given: object) -> dict[str, object]:
    """The pipeline options the user set, each checked against the run's modality's ``generate_keys``.

    Why through the modality: one command serves images, text and music, and an option another modality
    owns (``--bars`` on a text run, ``--class`` on a music run) must be refused, not silently dropped.
    """
    kind = modalities[pipe.modality]  # type: ignore[attr-defined]
    options = {k: v for k, v in {"prompt": prompt or None, **given}.items() if v is not None}
    foreign = [k for k in options if k not in kind.generate_keys]
    if foreign:
        flags = ", ".join("--class" if k == "class_label" else "--" + k.replace("_", "-") for k in foreign)
        run = pipe.info.get("run_id")  # type: ignore[attr-defined]
        raise ConfigError(f"{flags}: run {run} makes {kind.noun}s, which do not take this")
    if kind.prompted:  # a completion always has a prompt (maybe empty) and a length
        options = {**options, "prompt": prompt, "max_tokens": max_tokens}
    return options


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    t = Table(title=title)
    for i, c in enumerate(columns):
        ids = c in ("id", "run", "candidate")  # ids stay whole and copyable; other columns wrap
        width = max((len(str(r[i])) for r in rows if r[i] is not None), default=0) if ids else None
        t.add_column(c, no_wrap=ids, min_width=width)
    for r in rows:
        t.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
    out.print(t)


@feedback_app.command("generate")
def generate(
    run_id: str = typer.Argument(..., help="Run id."),
    n: int = typer.Option(8, "--n"),
    seed: int = typer.Option(0, "--seed"),
    prompt: str = Prompt,
    max_tokens: int = MaxTokens,
    class_label: int | None = ClassLabel,
    temperature: float | None = Temperature,
    top_p: float | None = TopP,
    bars: int | None = Bars,
    key: str | None = Key,
    time_signature: str | None = TimeSignature,
    style: str | None = Style,
    prompt_midi: Path | None = PromptMidi,
    prompt_bars: int | None = PromptBars,
    user: str | None = typer.Option(None, "--user"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Generate N outputs and store them for rating; prints their generation ids."""
    from .. import api

    pipe = api.load(run_id, runs_dir=runs_dir)
    opts = _generate_options(
        pipe,
        prompt,
        max_tokens,
        class_label=class_label,
        temperature=temperature,
        top_p=top_p,
        bars=bars,
        key=key,
        time_signature=time_signature,
        style=style,
        prompt_midi=prompt_midi,
        prompt_bars=prompt_bars,
    )
    output = pipe(n=n, seed=seed, **opts)
    ids = _store(db, runs_dir).add_outputs(output, user=user)
    kind = modalities[pipe.modality]
    _table(
        f"{len(ids)} generations of {pipe.info['run_id']}",
        ["id", "seed", kind.noun],
        [[gid, output.recipe_of(i)["seed"], kind.item_summary(output, i)] for i, gid in enumerate(ids)],
    )


@feedback_app.command("list")
def list_(
    run_id: str | None = typer.Option(None, "--run"),
    limit: int = typer.Option(20, "--limit"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Recent generations with their ratings."""
    store = _store(db, runs_dir)
    rows = store.list(run_id=run_id, limit=limit)
    table = []
    for g in rows:
        s = store.summary(g.id)
        table.append(
            [
                g.id,
                g.run_id,
                g.modality,
                (g.text or "")[:40] if g.text is not None else g.prompt,
                s["up"],
                s["down"],
                s["stars"],
            ]
        )
    _table(f"{len(rows)} generations", ["id", "run", "modality", "text / prompt", "up", "down", "stars"], table)


@feedback_app.command("rate")
def rate(
    generation_id: str = typer.Argument(..., help="Generation id."),
    stars: int | None = typer.Option(None, "--stars", help="1 to 5."),
    up: bool = typer.Option(False, "--up", help="Thumbs up."),
    down: bool = typer.Option(False, "--down", help="Thumbs down."),
    user: str | None = typer.Option(None, "--user"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Rate one generation: --stars N and/or --up / --down."""
    if up and down:
        raise ConfigError("give --up or --down, not both")
    store = _store(db, runs_dir)
    store.rate(generation_id, thumbs=1 if up else -1 if down else None, stars=stars, user=user)
    s = store.summary(generation_id)
    print(f"rated {generation_id}: {s['up']} up, {s['down']} down, mean stars {s['stars']} ({s['ratings']} ratings)")


@feedback_app.command("prefer")
def prefer(
    chosen: str = typer.Argument(..., help="The generation preferred."),
    rejected: str = typer.Argument(..., help="The one it was preferred over."),
    user: str | None = typer.Option(None, "--user"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Record an A/B choice: CHOSEN was preferred over REJECTED."""
    _store(db, runs_dir).prefer(chosen, rejected, user=user)
    print(f"preferred {chosen} over {rejected}")


@feedback_app.command("export")
def export(
    format: str = typer.Option("trl-pairs", "--format", help="trl-pairs (DPO) or trl-unpaired (KTO)."),
    out_file: Path = typer.Option(..., "--out", help="JSONL file to write."),
    run_id: str | None = typer.Option(None, "--run", help="Only this run's generations."),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Export feedback as TRL JSONL."""
    from ..feedback.export import export as do_export

    r = do_export(_store(db, runs_dir), out_file, format=format, run_id=run_id)
    print(
        f"wrote {r['written']} lines to {r['path']}"
        + (f" ({r['skipped']} 3-star ratings skipped)" if r["skipped"] else "")
    )


@feedback_app.command("train-reward")
def train_reward(
    run_id: str | None = typer.Option(None, "--run", help="Only feedback on this run's generations."),
    modality: str | None = typer.Option(None, "--modality", help="image, text or music (when the store has several)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Folder to save to (default: <runs>/rewards/latest)."),
    epochs: int = typer.Option(300, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Train a reward model on the ratings and preferences; prints its held-out pairwise accuracy."""
    from ..feedback.reward import RewardConfig, default_reward_dir
    from ..feedback.reward import train_reward as fit

    if modality is not None and modality not in modalities:
        raise ConfigError(f"--modality must be {' or '.join(modalities.names())}, got {modality!r}")
    target = out_dir or default_reward_dir(runs_dir)
    _, report = fit(
        _store(db, runs_dir),
        run_id=run_id,
        modality=modality,
        cfg=RewardConfig(epochs=epochs, seed=seed),
        out=target,
        runs_dir=runs_dir,
    )
    keys = [
        "modality",
        "generations",
        "ratings",
        "preferences",
        "heldout_pairs",
        "heldout_pair_accuracy",
        "train_pair_accuracy",
        "seconds",
    ]
    _table("reward model", ["", "value"], [[k, report.get(k)] for k in keys])
    print(f"saved {target}")


@feedback_app.command("rerank")
def rerank(
    run_id: str = typer.Argument(..., help="Run id."),
    reward: Path | None = RewardDir,
    n: int = typer.Option(8, "--n", help="Outputs to keep."),
    k: int = typer.Option(4, "--k", help="Candidates per output."),
    seed: int = typer.Option(0, "--seed"),
    prompt: str = Prompt,
    max_tokens: int = MaxTokens,
    class_label: int | None = ClassLabel,
    temperature: float | None = Temperature,
    top_p: float | None = TopP,
    bars: int | None = Bars,
    key: str | None = Key,
    time_signature: str | None = TimeSignature,
    style: str | None = Style,
    prompt_midi: Path | None = PromptMidi,
    prompt_bars: int | None = PromptBars,
    store_them: bool = typer.Option(False, "--store", help="Store the kept outputs for rating."),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Best-of-k sampling: draw k candidates per output, keep the one the reward model scores highest."""
    from .. import api
    from ..feedback.optimize import best_of_n

    pipe = api.load(run_id, runs_dir=runs_dir)
    opts = _generate_options(
        pipe,
        prompt,
        max_tokens,
        class_label=class_label,
        temperature=temperature,
        top_p=top_p,
        bars=bars,
        key=key,
        time_signature=time_signature,
        style=style,
        prompt_midi=prompt_midi,
        prompt_bars=prompt_bars,
    )
    r = best_of_n(pipe, _reward(reward, runs_dir), n=n, k=k, seed=seed, **opts)
    ids = _store(db, runs_dir).add_outputs(r) if store_them else [None] * n
    kind = modalities[pipe.modality]
    _table(
        f"best of {k}, {n} kept",
        ["id", "seed", "reward", "mean of candidates", kind.noun],
        [
            [ids[i], r.recipes[i]["seed"], float(r.scores[i]), float(r.candidate_scores[i].mean())]
            + [kind.item_summary(r, i)]
            for i in range(n)
        ],
    )


@feedback_app.command("finetune")
def finetune(
    run_id: str = typer.Argument(..., help="Run id (the parent; it is not changed)."),
    reward: Path | None = RewardDir,
    steps: int = typer.Option(300, "--steps"),
    samples: int = typer.Option(2000, "--samples", help="Images: how many to score."),
    keep: float = typer.Option(0.2, "--keep", help="Images: top share kept."),
    real_fraction: float = typer.Option(0.3, "--real-fraction", help="Images: share of real images mixed in."),
    beta: float = typer.Option(0.1, "--beta", help="Text, music: DPO beta."),
    lr: float | None = typer.Option(None, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    # The docstring is the command's --help line; Typer prints a wrapped docstring wrapped, so it stays one line.
    """A new run tuned toward preferred outputs: reward-filtered fine-tuning (images) or DPO on the stored pairs (text, music)."""  # noqa: E501
    from .. import api
    from ..feedback import optimize as o

    kind = modalities[api.modality(run_id, runs_dir=runs_dir)]
    if not kind.can_finetune:  # the modality says why not
        kind.finetune(run_id, None, None, "", {}, runs_dir)
    if kind.finetune_method == "dpo":  # a language model (text, music): DPO on the run's stored A/B choices
        cfg = o.DPOConfig(beta=beta, steps=steps, lr=lr or 1e-4, seed=seed)
        run_filter = api.RunStore(runs_dir).get(run_id).id
        r = kind.dpo(run_id, _store(db, runs_dir), cfg, runs_dir, run_filter=run_filter)
    else:
        cfg = o.FinetuneConfig(samples=samples, keep=keep, real_fraction=real_fraction, steps=steps, lr=lr, seed=seed)
        r = o.finetune_images(run_id, _reward(reward, runs_dir), cfg, runs_dir=runs_dir)
    _table(f"fine-tuned: {r['run_id']}", ["", "value"], [[k, v] for k, v in r.items()])


@feedback_app.command("select")
def select(
    candidates: list[str] = typer.Argument(..., help="Runs, or RUN@best / RUN@last."),
    reward: Path | None = RewardDir,
    n: int = typer.Option(200, "--n"),
    seed: int = typer.Option(0, "--seed"),
    runs_dir: Path | None = RunsDir,
) -> None:
    """Pick the run or checkpoint whose samples have the highest mean predicted rating."""
    from ..feedback.optimize import select_checkpoint

    r = select_checkpoint(candidates, _reward(reward, runs_dir), n=n, seed=seed, runs_dir=runs_dir)
    _table(
        "checkpoints by mean predicted rating",
        ["candidate", "step", "mean reward", "std", "n"],
        [[row["candidate"], row["step"], row["mean_reward"], row["std_reward"], row["n"]] for row in r["table"]],
    )
    print(f"best {r['best']}")


@feedback_app.command("simulate")
def simulate(
    run_id: str = typer.Argument(..., help="Run id."),
    rater: str = typer.Option(
        ...,
        "--rater",
        help="class:K, thick (images); contains:STRING, short[:N] (text); in-key:KEY, range:LOW-HIGH (music).",
    ),
    n_rate: int = typer.Option(200, "--n-rate", help="Outputs the rater rates."),
    n_eval: int = typer.Option(500, "--n-eval", help="Samples per measurement."),
    k: int = typer.Option(4, "--k", help="Best-of-k."),
    steps: int = typer.Option(300, "--steps", help="Fine-tuning steps."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning learning rate (images: the run's; DPO: 1e-4)."),
    uses: str = typer.Option(
        "best_of_n,finetune,select", "--uses", help="Comma-separated: best_of_n, finetune, select."
    ),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path | None = typer.Option(None, "--out", help="JSON file."),
    db: str | None = Db,
    runs_dir: Path | None = RunsDir,
) -> None:
    """Measure the loop with a scripted rater: preferred share before/after each use, FID beside it."""
    from ..feedback.optimize import DPOConfig, FinetuneConfig
    from ..feedback.simulate import simulate as run_sim

    r = run_sim(
        run_id,
        rater,
        n_rate=n_rate,
        n_eval=n_eval,
        k=k,
        seed=seed,
        store=_store(db, runs_dir),
        runs_dir=runs_dir,
        out=out_file,
        uses=[u.strip() for u in uses.split(",") if u.strip()],
        finetune=FinetuneConfig(steps=steps, lr=lr, seed=seed),
        dpo=DPOConfig(steps=steps, lr=lr or 1e-4, seed=seed),
        progress=_note,
    )
    rows = []
    for name, m in r["results"].items():
        rows.append(
            [
                name,
                m.get("preferred_share"),
                m.get("rater_value"),
                m.get("fid", m.get("mean_chars", m.get("mean_notes"))),
                m.get("mean_reward"),
                m.get("seconds"),
            ]
        )
    acc = r["reward"].get("heldout_pair_accuracy")
    _table(
        f"{r['preference']}; reward model held-out accuracy {acc if acc is None else round(acc, 3)}",
        ["", "preferred", "rater value", modalities[r["modality"]].probe_label, "reward", "seconds"],
        rows,
    )
    if "finetune" in r["results"]:
        print(f"fine-tuned run {r['results']['finetune']['run_id']}")
    if "select" in r["results"]:
        print(f"selected {r['results']['select']['chosen']}")
    print(f"wrote {r['path']}")
