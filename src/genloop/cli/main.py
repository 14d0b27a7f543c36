"""``genloop``: one sub-command per stage of the loop. Thin: parse, call ``genloop.api``, print.

User errors (``GenLoopError``) print one line and exit with code 2 (3 for a diverged training run);
Ctrl-C exits with 130 after the engine has saved a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError, GenLoopError
from ..modalities import modalities

app = typer.Typer(
    help="GenLoop: data -> train -> generate -> evaluate -> feedback, in one loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
runs_app = typer.Typer(help="List, show and remove runs.", no_args_is_help=True)
keys_app = typer.Typer(
    help="This installation's provenance signing key (made on first use in the GenLoop config folder).",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(keys_app, name="keys")
from .feedback import feedback_app  # noqa: E402 - the feedback sub-app lives in its own module

app.add_typer(
    feedback_app, name="feedback", help="Rate and compare generations, export for TRL, train a reward model and use it."
)

out = Console(highlight=False)  # tables only; lines go through say()/note() so pipes get them whole
err = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        say(f"genloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print GenLoop's version and exit."
    ),
) -> None:
    """GenLoop: data -> train -> generate -> evaluate -> feedback, in one loop."""


def say(text: str) -> None:
    """A plain line on standard output: no markup parsing, no wrapping (paths and ids stay copyable)."""
    print(text, flush=True)


def note(text: str) -> None:
    """A plain line on standard error (progress, summaries)."""
    print(text, file=sys.stderr, flush=True)


RunsDir = typer.Option(None, "--runs-dir", help="Run store folder (default: $GENLOOP_RUNS_DIR or ./runs).")


def parse_duration(text: str) -> float:
    """'90s', '3m', '1h', '1m30s' or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
        if not t or not parts or not any(parts.groups()):
            raise ConfigError(f"--time-budget: cannot read {text!r}; use seconds or a duration like 90s, 3m, 1h, 1m30s")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ConfigError(f"--time-budget must be positive, got {text!r}")
    return seconds


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


# --- data -----------------------------------------------------------------------------------------
@data_app.command("info")
def data_info(
    dataset: str = typer.Argument(
        ..., help="A built-in name (digits, photos, mnist, fashion-mnist, pydoc, bach, essen, ryans-mammoth) or a path."
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Prepare at this size (default 32)."),
    set_: list[str] = typer.Option([], "--set", help="data.key=value, e.g. channels=3 or tokenizer=bpe."),
    text: bool = typer.Option(False, "--text", help="Read the path as a text corpus (a .txt, a folder, a .jsonl)."),
    music: bool = typer.Option(False, "--music", help="Read the path as music (MIDI, MusicXML, ABC, kern)."),
) -> None:
    """Images: size, shape, channels, classes, value range, splits. Text: documents, tokens, vocabulary, splits.
    Music: pieces, notes, splits, styles, time signatures, skipped pieces."""
    from ..api import dataset_info

    info = dataset_info(dataset, image_size, set_, text=text, music=music)
    table = Table(title=f"dataset {info['name']}", show_header=False)
    for k, v in info.items():
        if k != "class_names" or v:
            table.add_row(k, _fmt(v))
    out.print(table)


@data_app.command("list")
def data_list() -> None:
    """The built-in data sets of every modality, one line each: name, modality, what it is and how big."""
    rows = [(name, m, about) for m in modalities for name, about in modalities[m].builtin_data().items()]
    width = max(len(name) for name, _, _ in rows)
    for name, m, about in rows:
        say(f"{name:<{width}}  {m:<6} {about}")


# --- train ----------------------------------------------------------------------------------------
def _recipe_help() -> str:
    from ..recipes import AUTO, RECIPES

    named = "; ".join(f"{r.name} ({r.rule})" for r in RECIPES.values())
    return (
        f"Choose the settings from the data: '{AUTO}' picks the model family (if none is named), image size, "
        f"augmentation, batch and budget, and prints why; or a named recipe: {named}. "
        "--config and --set still win over its settings."
    )


_RECIPE_HELP = _recipe_help()


@app.command()
def train(
    model: str | None = typer.Argument(
        None,
        help="Model family: dcgan, wgan-gp, cgan, resgan, vae, beta-vae, cvae, ddpm, ddpm-distill (images); ddpm-text "
        "(text to image, on captioned data); gpt, hf-causal-lm (text); music-gpt (music). Optional with --recipe: the "
        "recipe picks one from the data.",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Dataset name or path (default: digits for images, pydoc for text, bach for music; a .txt, folder or "
        ".jsonl for text; bach, essen, ryans-mammoth or a MIDI/MusicXML/ABC file or folder for music).",
    ),
    init: str | None = typer.Option(
        None, "--init", help="hf-causal-lm: a local Hugging Face model directory to fine-tune."
    ),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        help="ddpm-distill: the ddpm run (v-prediction) to distil into a few-step sampler; its data is the default.",
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML file with model/data/train sections."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value (repeatable)."),
    steps: int | None = typer.Option(None, "--steps", help="Train for this many steps."),
    time_budget: str | None = typer.Option(None, "--time-budget", help="Train for this long: 90s, 3m, 1h."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default 0)."),
    resume: str | None = typer.Option(
        None, "--resume", help="Continue this run from its last checkpoint (from step 0 if it has none yet)."
    ),
    runs_dir: Path | None = RunsDir,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    nproc: int | None = typer.Option(
        None,
        "--nproc",
        help="Train data-parallel on N local processes (one per GPU, or CPU processes), through torchrun; "
        "train.batch_size stays the global batch. For several machines run torchrun yourself (README).",
    ),
    max_restarts: int = typer.Option(
        0, "--max-restarts", help="With --nproc: restart all processes up to K times after one fails (resumes)."
    ),
    recipe: str | None = typer.Option(None, "--recipe", help=_RECIPE_HELP),
) -> None:
    """Train a model. The last line of standard output is the run id.

    With --recipe auto --data FOLDER the model may be left out: GenLoop looks at the data and picks it."""
    from .. import api, distributed

    if nproc is not None and distributed.launched().world_size == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        from ..launch import launch

        args = ["train", *([model] if model else []), *(["--data", data] if data else [])]
        args += [*(["--init", init] if init else []), *(["--config", str(config)] if config else [])]
        args += ["--teacher", teacher] if teacher else []
        args += [a for s in set_ for a in ("--set", s)]
        args += [*(["--steps", str(steps)] if steps is not None else [])]
        args += [
            *(["--time-budget", time_budget] if time_budget else []),
            *(["--seed", str(seed)] if seed is not None else []),
        ]
        args += [*(["--resume", resume] if resume else []), *(["--runs-dir", str(runs_dir)] if runs_dir else [])]
        args += ["--recipe", recipe] if recipe else []
        launch(nproc, [*args, *(["--quiet"] if quiet else [])], max_restarts)
        return
    budget = parse_duration(time_budget) if time_budget else None
    if init is not None:
        set_ = [*set_, f"model.init={init}"]
    if teacher is not None:  # the teacher's run directory, found in this command's run store
        from ..runs import RunStore
        from ..systems.ddpm_distill import teacher_data

        teacher_dir = RunStore(runs_dir).get(teacher).dir.resolve()
        set_ = [f"model.teacher={teacher_dir}", *set_]
        if data is None and config is None:  # distil on the data the teacher learnt (--set still wins)
            config = {"data": teacher_data(str(teacher_dir))}  # type: ignore[assignment]
    if resume:
        if model or data or config or set_ or seed is not None or recipe or teacher:
            raise ConfigError(
                "--resume continues a run with its own settings; only --steps and --time-budget may change"
            )
        run = api.resume(resume, steps=steps, time_budget=budget, runs_dir=runs_dir, progress=not quiet)
    else:
        choice = None
        if recipe:
            from ..recipes import choose

            choice = choose(data, model, recipe, config, set_, steps, budget)
            if distributed.launched().rank == 0:
                for line in choice.lines(config, set_):
                    note(line)
        elif not model:
            from ..systems import models

            raise ConfigError(
                f"name a model to train ({', '.join(models.names())}), pass --recipe auto --data FOLDER, "
                "or pass --resume RUN_ID"
            )
        from .warn import warnings_as_lines

        with warnings_as_lines():  # e.g. too few held-out images for `genloop eval`: said before training
            run = api.train(model, data, config, set_, steps, budget, seed, runs_dir, progress=not quiet, recipe=choice)
    if not distributed.is_main():  # under torchrun, rank 0 speaks for the job
        distributed.shutdown()
        return
    world = distributed.world_size()
    distributed.shutdown()
    info = run.info
    if info.get("status") == "interrupted":
        again = f" --nproc {world}" if world > 1 else ""
        note(
            f"interrupted at step {info['step']}; checkpoint saved. Resume with: genloop train --resume {run.id}{again}"
        )
        say(run.id)
        raise typer.Exit(130)
    t = info.get("timings", {})
    unit = "tokens" if "tokens_per_s" in t else "images"
    stop = " (early stop: validation stopped improving)" if info.get("stopped_by") == "early_stop" else ""
    note(
        f"trained {info['model']} on {info['dataset']}: {info['step']} steps in {t.get('train_seconds', 0):.0f}s "
        f"({t.get(unit + '_per_s', 0):.0f} {unit}/s, {info.get('precision')} on {info.get('device')}){stop} "
        f"-> {run.dir}"
    )
    say(run.id)


# --- generate / eval / report ---------------------------------------------------------------------
NprocOption = typer.Option(
    None,
    "--nproc",
    help="Image runs: share the samples out over N local processes (one per GPU, or CPU processes) through "
    "torchrun; the files and metrics are those of one process. For several machines run torchrun yourself.",
)
_ARGV: list[str] = []  # the command line main() was given: --nproc re-runs it under torchrun


def _without_nproc(args: list[str]) -> list[str]:
    """``args`` less ``--nproc N`` / ``--nproc=N``: what each torchrun worker runs."""
    kept: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            kept.append(a)
    return kept


def _relaunched(nproc: int | None, run_id: str, runs_dir: Path | None) -> bool:
    """With ``--nproc`` outside torchrun: run this same command on ``nproc`` processes under torchrun and
    return True once they have all ended (rank 0 prints the usual output). False: do the work here."""
    from .. import api, distributed

    if nproc is None or distributed.launched().world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        return False
    from ..launch import launch, torchrun_args

    torchrun_args(nproc, [])  # --nproc 0 is a one-line error before anything is loaded
    from ..modalities import modalities

    modality = api.modality(run_id, runs_dir)
    if nproc > 1 and not modalities[modality].can_shard:
        raise ConfigError(f"--nproc: run {run_id} is a {modality} model, whose work is not shared out (drop --nproc)")
    launch(nproc, _without_nproc(_ARGV))
    return True


@app.command()
def generate(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix, or the run's folder)."),
    n: int | None = typer.Option(
        None,
        "--n",
        "-n",
        help="How many images (default 64), texts (default 1) or pieces of music (default 4). Under torchrun "
        "write -n: torchrun takes --n for its own --nnodes.",
    ),
    seed: int = typer.Option(0, "--seed", help="Image, text or piece i uses seed + i."),
    prompt: str | None = typer.Option(
        None,
        "--prompt",
        help="Text models: the text to continue (default: a new document). Text-to-image models (ddpm-text): what "
        "to draw (default: the unconditional model).",
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Text models: new tokens at most (default 200)."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Text (default 1) and music (default 0.9) models: 0 is greedy; higher: more random."
    ),
    top_k: int = typer.Option(0, "--top-k", help="Text models: sample from the k likeliest tokens (0: off)."),
    top_p: float | None = typer.Option(
        None, "--top-p", help="Text (default 1: off) and music (default 0.95) models: nucleus sampling mass."
    ),
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", help="Text models: >1 discourages repeats (1: off)."
    ),
    presence_penalty: float = typer.Option(
        0.0,
        "--presence-penalty",
        help="Text models: OpenAI's, -2..2; >0 discourages any generated token again (0: off).",
    ),
    frequency_penalty: float = typer.Option(
        0.0, "--frequency-penalty", help="Text models: OpenAI's, -2..2; >0 discourages by times generated (0: off)."
    ),
    stop: list[str] = typer.Option([], "--stop", help="Text models: stop before this text (repeatable)."),
    beams: int = typer.Option(1, "--beams", help="Text models: beam search width (1: sampling)."),
    no_stream: bool = typer.Option(
        False, "--no-stream", help="Text models: print when done instead of as tokens come."
    ),
    compile_: bool = typer.Option(
        False,
        "--compile",
        help="gpt models: compile the decoding step: ~1.25x tokens/s for one stream, 1.07-1.18x for 4-8 "
        "samples, after 2-20 s of compiling (BENCHMARKS.md); more samples decode eagerly (compiling was slower).",
    ),
    watermark: bool = typer.Option(
        False,
        "--watermark",
        help="Text models: mark the text with the run store's green-list watermark (gamma 0.25, delta 2).",
    ),
    form: str | None = typer.Option(
        None,
        "--form",
        help="Text models: a Chinese poem in this form, wujue|qijue|wulv|qilv (五/七言 绝句/律诗), decoding "
        "constrained to it; --prompt is then the title or theme.",
    ),
    acrostic: str | None = typer.Option(
        None, "--acrostic", help="With --form: the first character of each line (藏头诗), e.g. 春夏秋冬."
    ),
    no_rhyme: bool = typer.Option(
        False,
        "--no-rhyme",
        help="With --form: constrain the layout only (by default every even line ends on one rhyme class, level tone).",
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder (default: <run>/generated)."),
    class_label: int | None = typer.Option(
        None, "--class", help="Class to generate (conditional models; default: every class in turn)."
    ),
    sampler: str | None = typer.Option(
        None, "--sampler", help="Diffusion sampler: ddpm, ddim or dpmpp-2m (default: the model's)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Diffusion sampling steps (default: the model's)."),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Classifier-free guidance scale (conditional diffusion)."
    ),
    eta: float | None = typer.Option(None, "--eta", help="DDIM noise: 0 deterministic, 1 like DDPM."),
    extras: bool = typer.Option(
        False,
        "--extras",
        help="Image models: also write interpolation.png (60 more images: slow for diffusion) and, for models "
        "with an encoder, reconstructions.png.",
    ),
    bars: int | None = typer.Option(None, "--bars", help="Music models: bars per piece (default 16)."),
    prompt_midi: Path | None = typer.Option(
        None, "--prompt-midi", help="Music models: a MIDI file whose first --prompt-bars bars each piece continues."
    ),
    prompt_bars: int | None = typer.Option(
        None, "--prompt-bars", help="Music models: bars of --prompt-midi (default 4)."
    ),
    key: str | None = typer.Option(
        None, "--key", help="Music models: e.g. 'F major', 'A minor' (default: the model draws one)."
    ),
    time_signature: str | None = typer.Option(
        None, "--time-signature", help="Music models: e.g. 3/4 (default: the model draws one)."
    ),
    style: str | None = typer.Option(None, "--style", help="Music models: a style the model was trained on."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last, or best (runs trained with train.eval_every)."),
    no_sign: bool = typer.Option(
        False,
        "--no-sign",
        help="Write no signed provenance manifest (by default every output carries one, embedded and as "
        "<file>.manifest.json, signed with this installation's key; `genloop verify` checks it).",
    ),
    rules: str | None = typer.Option(
        None,
        "--rules",
        help="Text models: moderation rule files (YAML/JSON/TXT, several joined by ':') added to the built-in "
        "list (env GENLOOP_MODERATION_RULES). A blocked prompt is an error (exit 2); a blocked text is withheld. "
        "GENLOOP_MODERATION=off turns moderation off.",
    ),
    no_watermark: bool = typer.Option(
        False,
        "--no-watermark",
        help="Put no invisible watermark in images and MIDI (by default each carries a hash of its content that "
        "`genloop verify` reads back, even from a stripped file, and looks up in the run store's index).",
    ),
    runs_dir: Path | None = RunsDir,
    device: str = typer.Option("cpu", "--device"),
    nproc: int | None = NprocOption,
) -> None:
    """Generate images (a PNG grid plus one PNG per image, recipes embedded), text (streamed; saved with recipes)
    or music (per piece: a MIDI with its recipe, .mid.json, .wav and a piano-roll .png). Every output is signed
    (a provenance manifest; see `genloop verify`) unless --no-sign, and images and MIDI watermarked unless
    --no-watermark."""
    from .. import distributed
    from ..safety.image_watermark import watermarking
    from ..safety.provenance import signing

    if _relaunched(nproc, run_id, runs_dir):
        return
    before = os.environ.get("GENLOOP_MODERATION_RULES")
    if rules:  # the pipeline's moderator reads its rule files from the environment, for this command only
        os.environ["GENLOOP_MODERATION_RULES"] = os.pathsep.join(p for p in (before, rules) if p)
    try:
        with signing(not no_sign), watermarking(not no_watermark):
            _generate(
                **{
                    k: v
                    for k, v in locals().items()
                    if k not in ("distributed", "nproc", "signing", "watermarking", "no_watermark", "rules", "before")
                }
            )
    finally:
        distributed.shutdown()
        if rules:
            if before is None:
                os.environ.pop("GENLOOP_MODERATION_RULES", None)
            else:
                os.environ["GENLOOP_MODERATION_RULES"] = before


def _generate(
    run_id: str,
    n: int | None,
    seed: int,
    prompt: str | None,
    max_tokens: int,
    temperature: float | None,
    top_k: int,
    top_p: float | None,
    repetition_penalty: float,
    presence_penalty: float,
    frequency_penalty: float,
    stop: list[str],
    beams: int,
    no_stream: bool,
    compile_: bool,
    watermark: bool,
    out_dir: Path | None,
    class_label: int | None,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    eta: float | None,
    extras: bool,
    bars: int | None,
    prompt_midi: Path | None,
    prompt_bars: int | None,
    key: str | None,
    time_signature: str | None,
    style: str | None,
    checkpoint: str,
    no_sign: bool,
    runs_dir: Path | None,
    device: str,
    form: str | None = None,
    acrostic: str | None = None,
    no_rhyme: bool = False,
) -> None:
    """The body of ``genloop generate`` (in one process, or on each rank under torchrun)."""
    from .. import api, distributed

    kind = modalities[api.modality(run_id, runs_dir)]
    music_options = {
        "--bars": bars,
        "--prompt-midi": prompt_midi,
        "--prompt-bars": prompt_bars,
        "--key": key,
        "--time-signature": time_signature,
        "--style": style,
    }
    music_given = [k for k, v in music_options.items() if v is not None]
    image_options = {
        "--class": class_label,
        "--sampler": sampler,
        "--steps": steps,
        "--guidance": guidance,
        "--eta": eta,
        "--extras": extras or None,
    }
    image_prompt = not kind.prompted and api.text_conditional(run_id, runs_dir)  # text to image: --prompt is its
    if not kind.prompted:
        from .text_options import text_only_given

        text_given = text_only_given(
            prompt=None if image_prompt else prompt,
            stop=stop,
            watermark=watermark,
            max_tokens=max_tokens,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            beams=beams,
            no_stream=no_stream,
            compile_=compile_,
            form=form,
            acrostic=acrostic,
            no_rhyme=no_rhyme,
        )
        if text_given:
            raise ConfigError(f"{', '.join(text_given)}: only text models take this; run {run_id} makes {kind.noun}s")
        paths = kind.generate_files(
            run_id,
            4 if n is None else n,
            seed,
            out_dir,
            runs_dir,
            device,
            checkpoint,
            bars=bars,
            prompt_midi=prompt_midi,
            prompt_bars=prompt_bars,
            key=key,
            time_signature=time_signature,
            style=style,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or None,
            **{k.lstrip("-").replace("-", "_"): v for k, v in image_options.items() if v is not None},
        )
        if paths is not None:
            if not distributed.is_main():  # under torchrun, rank 0 speaks for the job
                return
            say(f"wrote {len(paths)} files to {paths[0].parent} (a .mid with its recipe, .mid.json, .wav, .png each)")
            return
    if music_given:
        raise ConfigError(f"{', '.join(music_given)}: only music models take this; run {run_id} makes {kind.noun}s")
    temperature = 1.0 if temperature is None else temperature
    top_p = 1.0 if top_p is None else top_p
    if kind.prompted:
        _generate_text(
            run_id,
            1 if n is None else n,
            seed,
            out_dir,
            prompt,
            200 if max_tokens is None else max_tokens,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            presence_penalty,
            frequency_penalty,
            stop,
            beams,
            no_stream,
            checkpoint,
            runs_dir,
            device,
            compile_,
            sign=not no_sign,
            watermark=watermark,
            form=form,
            acrostic=acrostic,
            no_rhyme=no_rhyme,
            image_options=image_options,
        )
        return
    text_given = [
        name
        for name, v in (("--prompt", None if image_prompt else prompt), ("--stop", stop or None), ("--form", form))
        if v is not None
    ]
    if text_given:
        raise ConfigError(f"{', '.join(text_given)}: only text models take this; run {run_id} generates images")
    n = 64 if n is None else n
    from ..progress import StepProgress

    with StepProgress("sampling") as bar:
        paths = api.generate(
            run_id,
            n=n,
            seed=seed,
            out=out_dir,
            runs_dir=runs_dir,
            device=device,
            class_label=class_label,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            eta=eta,
            checkpoint=checkpoint,
            sign=not no_sign,
            extras=extras,
            progress=bar if distributed.is_main() else None,
            **({"prompt": prompt} if image_prompt else {}),
        )
    if not distributed.is_main():  # under torchrun, rank 0 speaks for the job
        return
    say(f"wrote {len(paths)} PNGs to {paths[0].parent} (grid: {paths[0]})")


def _generate_text(
    run_id: str,
    n: int,
    seed: int,
    out_dir: Path | None,
    prompt: str | None,
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
    presence_penalty: float,
    frequency_penalty: float,
    stop: list[str],
    beams: int,
    no_stream: bool,
    checkpoint: str,
    runs_dir: Path | None,
    device: str,
    compile_: bool,
    image_options: dict,
    sign: bool = True,
    watermark: bool = False,
    form: str | None = None,
    acrostic: str | None = None,
    no_rhyme: bool = False,
) -> None:
    import warnings

    from .. import api, distributed

    given = [k for k, v in image_options.items() if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only image models take this; {run_id} is a text model")
    sampling = dict(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        stop=list(stop),
        num_beams=beams,
    )
    if compile_:
        sampling["compile"] = True
    if watermark:
        sampling["watermark"] = True
    if acrostic and not form:
        raise ConfigError("--acrostic needs --form (the poem form whose lines it heads)")
    if no_rhyme and not form:
        raise ConfigError("--no-rhyme needs --form (the poem form whose rhyme it turns off)")
    if form:  # a poem: the prompt is its title, the form a constraint (see genloop.modalities.text.poetry)
        from ..modalities.text.poetry import poem_constraint, title_prompt

        sampling["constraint"], prompt = poem_constraint(form, acrostic, not no_rhyme), title_prompt(prompt)
    # under torchrun nothing streams: the ranks share the chunks and rank 0 prints the texts in item order
    stream = not no_stream and n == 1 and beams == 1 and distributed.launched().world_size == 1
    prompt = prompt or ""
    from .text_options import echo

    shown = echo(prompt)  # a long prompt is echoed by its end, with a note
    started = False

    def show(piece: str) -> None:
        nonlocal started
        if not started:  # the prompt is echoed once moderation has let it through and the text begins
            started = True
            sys.stdout.write(shown)
        sys.stdout.write(piece)
        sys.stdout.flush()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # A deprecation warning speaks to the developers of the code that raised it, not to a user at the
        # terminal (Python hides them outside __main__); "always" above must not revive them. The one that
        # showed: torch.compile's Inductor imports torch.utils.mkldnn, whose @torch.jit.script_method
        # decorators each warn (ten lines per `generate --compile`).
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            output, path = api.generate_text(
                run_id,
                prompt=prompt,
                n=n,
                seed=seed,
                out=out_dir,
                runs_dir=runs_dir,
                device=device,
                checkpoint=checkpoint,
                on_piece=show if stream else None,
                sign=sign,
                **sampling,
            )
        except BaseException:
            if started:  # an error (or Ctrl-C) after the echo starts its own line, not `...xerror: ...`
                say("")
            raise
    if not distributed.is_main():  # under torchrun, rank 0 speaks for the job
        return
    if stream:
        if not started:
            show("")
        say("")
    else:
        for i, text in enumerate(output.texts):
            if n > 1:
                say(f"--- sample {i} (seed {seed + i}) ---")
            say(shown + text)
    for w in caught:
        note(f"warning: {w.message}")
    for i, mark in enumerate(output.moderation):
        if mark is not None:
            rule = mark.get("rule") or {}
            what = "withheld" if mark["action"] == "block" else "flagged"
            note(f"moderation: text {i} {what} (rule {rule.get('id')}, category {rule.get('category')})")
    note(f"saved with recipes to {path}")


@app.command("eval")
def eval_(
    run_ids: list[str] | None = typer.Argument(
        None, metavar="RUN", help="Run id (with --agreement: the rated runs to compare; default every rated run)."
    ),
    n: int | None = typer.Option(
        None,
        "--n",
        "-n",
        help="How many generated samples to score (default: 2000 images, 100 texts). Under torchrun write -n: "
        "torchrun takes --n for its own --nnodes.",
    ),
    seed: int = typer.Option(0, "--seed"),
    sampler: str | None = typer.Option(
        None, "--sampler", help="Diffusion sampler: ddpm, ddim or dpmpp-2m (default: the model's)."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Diffusion sampling steps (default: the model's)."),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Classifier-free guidance scale (conditional diffusion)."
    ),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last, or best (runs trained with train.eval_every)."),
    features: str = typer.Option(
        "ref",
        "--features",
        help="ref (GenLoop's reference net for the data), inception (standard FID weights, downloaded once), "
        "or hf:PATH (a local Hugging Face DINOv2/CLIP vision model folder).",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Inception-v3 FID weights file (with --features inception; default: download)."
    ),
    agreement: bool = typer.Option(
        False,
        "--agreement",
        help="Kendall tau between each stored metric and people's ratings/A-B choices, over rated runs and "
        "checkpoints (the studio database); writes <runs>/agreement.json.",
    ),
    db: str | None = typer.Option(
        None, "--db", envvar="GENLOOP_DB_URL", help="With --agreement: studio database URL (default: beside the runs)."
    ),
    sweep: str | None = typer.Option(
        None, "--sweep", help="Diffusion: steps-vs-FID curve over these step counts, e.g. 5,10,20,50."
    ),
    samplers: str = typer.Option("ddim,dpmpp-2m,ddpm", "--samplers", help="Samplers for --sweep."),
    sanity: bool = typer.Option(
        False,
        "--sanity",
        help="Check the yardstick, not the model: do FID/KID/precision/recall rank 7 known degradations of held-out "
        "images correctly in this feature net's space? (cached for the reference net; no samples are drawn)",
    ),
    watermarked: bool = typer.Option(
        False,
        "--watermarked",
        help="Image runs: score the samples with the invisible watermark that `generate` puts in (what the mark "
        "costs); written to eval/metrics_<features>-watermarked.json. By default samples are scored unmarked.",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help="Restoration instead of sampling: inpaint, upscale, deblur, denoise or colorize held-out images with the "
        "run (pipe.edit) and with classical baselines; PSNR/SSIM (hole PSNR), class kept, FID, time per image.",
    ),
    scale: int | None = typer.Option(None, "--scale", help="With --task upscale: 2 or 4 (default 2)."),
    sigma: float | None = typer.Option(
        None, "--sigma", help="With --task denoise: noise std in [-1, 1] pixel units (default 0.1)."
    ),
    blur_sigma: float | None = typer.Option(
        None, "--blur-sigma", help="With --task deblur: Gaussian blur std in pixels (default 1.0)."
    ),
    form: str | None = typer.Option(
        None,
        "--form",
        help="Text runs trained on Chinese poems: score N poems of this form (wujue|qijue|wulv|qilv) for form, rhyme, "
        "tone, distinct-n and memorisation beside held-out real poems; writes eval/poetry_<form>.json.",
    ),
    no_rhyme: bool = typer.Option(
        False, "--no-rhyme", help="With --form: sample with the layout constrained but the rhyme left to the model."
    ),
    runs_dir: Path | None = RunsDir,
    device: str = typer.Option("cpu", "--device"),
    nproc: int | None = NprocOption,
) -> None:
    """FID, KID, IS, precision/recall, density/coverage, class accuracy, copies: each beside its real-data floor.
    With --task: restoration of held-out images against classical baselines."""
    from .. import distributed

    if task is not None:
        clash = {"--agreement": agreement, "--sweep": sweep, "--sanity": sanity, "--watermarked": watermarked}
        clash.update({"--features": features != "ref", "--weights": weights, "--guidance": guidance, "--nproc": nproc})
        clash["--form"], clash["--no-rhyme"] = form, no_rhyme
        if any(v is not None and v is not False for v in clash.values()):
            names = ", ".join(k for k, v in clash.items() if v is not None and v is not False)
            raise ConfigError(f"--task scores restoration with the reference net; it does not combine with {names}")
        given = {"scale": scale, "sigma": sigma, "blur_sigma": blur_sigma, "steps": steps, "sampler": sampler}
        _eval_restoration(
            run_ids or [],
            task,
            n,
            {k: v for k, v in given.items() if v is not None},
            seed,
            runs_dir,
            device,
            checkpoint,
        )
        return
    if (scale, sigma, blur_sigma) != (None, None, None):
        raise ConfigError("--scale, --sigma and --blur-sigma go with --task")
    if agreement:
        _agreement(run_ids or [], db, seed, runs_dir)
        return
    if len(run_ids or []) != 1:
        raise ConfigError("eval takes one run id (several only with --agreement)")
    run_id = (run_ids or [""])[0]
    if sanity:
        print_sanity(run_id, features, weights, runs_dir, device)
        return
    if no_rhyme and form is None:
        raise ConfigError("--no-rhyme goes with --form")
    if form is not None:
        print_poetry(run_id, form, n or 100, seed, checkpoint, runs_dir, device, rhyme=not no_rhyme)
        return
    if sweep is not None and (nproc or distributed.launched().world_size) > 1:
        raise ConfigError("--sweep runs in one process; drop --nproc (or torchrun)")
    if _relaunched(nproc, run_id, runs_dir):
        return
    try:
        _eval(
            run_id,
            n,
            seed,
            sampler,
            steps,
            guidance,
            checkpoint,
            features,
            weights,
            sweep,
            samplers,
            runs_dir,
            device,
            watermarked,
        )
    finally:
        distributed.shutdown()


def _eval(
    run_id: str,
    n: int | None,
    seed: int,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    checkpoint: str,
    features: str,
    weights: Path | None,
    sweep: str | None,
    samplers: str,
    runs_dir: Path | None,
    device: str,
    watermarked: bool = False,
) -> None:
    """The body of ``genloop eval`` (in one process, or on each rank under torchrun)."""
    from .. import api, distributed

    if sweep is not None:
        try:
            step_list = [int(x) for x in sweep.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"--sweep takes step counts separated by commas, e.g. 5,10,20,50; got {sweep!r}"
            ) from None
        names = [x.strip() for x in samplers.split(",") if x.strip()]
        r = api.sweep(
            run_id,
            samplers=names,
            steps=step_list,
            n=n or 500,
            seed=seed,
            runs_dir=runs_dir,
            device=device,
            checkpoint=checkpoint,
            progress=True,
        )
        table = Table(title=f"sampler sweep of {r['run_id']} ({r['n']} samples; FID floor {r['fid_floor']:.3f})")
        for col in ("sampler", "steps", "FID", "x floor", "ms/image"):
            table.add_column(col, justify="left" if col == "sampler" else "right")
        for p in r["points"]:
            table.add_row(
                p["sampler"],
                str(p["steps"]),
                f"{p['fid']:.3f}",
                f"{p['fid'] / r['fid_floor']:.1f}x",
                f"{p['ms_per_image']:.1f}",
            )
        out.print(table)
        say(f"written to {api.RunStore(runs_dir).get(run_id).files.sampler_sweep_json} (and .png)")
        return
    if n is None:
        n = modalities[api.modality(run_id, runs_dir)].default_eval_n
    r = api.evaluate(
        run_id,
        n=n,
        seed=seed,
        runs_dir=runs_dir,
        device=device,
        progress=True,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        checkpoint=checkpoint,
        features=features,
        weights=weights,
        watermarked=watermarked,
    )
    if not distributed.is_main():  # under torchrun, rank 0 scores and speaks for the job
        return
    print_metrics(r)
    from ..evaluation.backbones import features_tag

    files = api.RunStore(runs_dir).get(run_id).files
    tag = features_tag(features)
    say(f"written to {files.eval / f'metrics_{tag}-watermarked.json' if watermarked else files.eval_metrics(tag)}")


def _eval_restoration(
    run_ids: list[str],
    task: str,
    n: int | None,
    options: dict[str, Any],
    seed: int,
    runs_dir: Path | None,
    device: str,
    checkpoint: str,
) -> None:
    """``genloop eval RUN --task T``: a method x metric table, written to eval/restoration_<task>.json."""
    from .. import api

    if len(run_ids) != 1:
        raise ConfigError("eval --task takes one run id")
    r = api.evaluate_restoration(
        run_ids[0], task, n or 200, options, seed, runs_dir, device=device, checkpoint=checkpoint, progress=True
    )
    out.print(restoration_table(r))
    if "class_kept_original" in r:
        say("class kept: the share of restored images the reference classifier puts in the original's class")
    if "genloop_margin_db" in r:
        say(f"GenLoop vs the best baseline ({r['best_baseline']}) on {r['headline']}: {r['genloop_margin_db']:+.2f} dB")
    say(f"written to {r['path']} (pictures: {r['picture']})")


def restoration_table(r: dict[str, Any]) -> Table:
    """One row per method (degraded input, baselines, GenLoop), one column per restoration metric."""
    params = ", ".join(f"{k} {v}" for k, v in r["degradation"].items())
    table = Table(title=f"{r['task']} ({params or 'grey input'}) on {r['n']} held-out images of {r.get('dataset')}")
    cols = [
        ("psnr", "PSNR dB"),
        ("hole_psnr", "hole PSNR dB"),
        ("ssim", "SSIM"),
        ("class_kept", "class kept"),
        ("fid", "FID"),
        ("seconds_per_image", "ms/image"),
    ]
    cols = [(k, label) for k, label in cols if any(k in m for m in r["methods"].values())]
    table.add_column("method")
    for _, label in cols:
        table.add_column(label, justify="right")
    for name, m in r["methods"].items():
        cells = []
        for k, _ in cols:
            v = m.get(k)
            cells.append(
                ""
                if v is None
                else f"{v * 1000:.1f}"
                if k == "seconds_per_image"
                else f"{v:.3f}"
                if k in ("ssim", "class_kept")
                else f"{v:.2f}"
            )
        tag = " (best baseline)" if name == r["best_baseline"] else " (reference)" if m["kind"] == "reference" else ""
        table.add_row(name + tag, *cells)
    own = {"fid": r.get("fid_floor"), "class_kept": r.get("class_kept_original")}  # the originals' own scores
    if any(v is not None for v in own.values()):
        table.add_row("originals", *["" if own.get(k) is None else f"{own[k]:.3f}" for k, _ in cols])
    return table


def _agreement(run_ids: list[str], db: str | None, seed: int, runs_dir: Path | None) -> None:
    """``genloop eval --agreement``: which metric orders the rated sources as people do (a table + JSON)."""
    from ..evaluation.agreement import agreement

    r = agreement(run_ids or None, runs_dir=runs_dir, db_url=db, seed=seed)
    kinds = [k for k in ("ratings", "preferences") if any(row[k]["tau"] is not None for row in r["rows"])]
    table = Table(title=f"agreement with people over {len(r['sources'])} rated sources (run@checkpoint)")
    table.add_column("metric (better)", overflow="fold")
    table.add_column("n", justify="right")
    for k in kinds:
        table.add_column(f"tau {'ratings' if k == 'ratings' else 'A/B'} [95%]", justify="right", no_wrap=True)
    for row in r["rows"]:
        cells = []
        for k in kinds:
            t, ci = row[k]["tau"], row[k]["ci95"]
            cells.append("-" if t is None else f"{t:+.2f}" + (f" [{ci[0]:+.2f},{ci[1]:+.2f}]" if ci else ""))
        table.add_row(f"{row['metric']} ({row['better']})", str(row["n_sources"]), *cells)
    out.print(table)
    say(
        "tau +1: the metric ranks sources as people do, 0: unrelated, -1: reversed; [95% bootstrap interval over "
        "rated items]. Watch the metric with the highest tau whose interval stays above 0."
    )
    if r["left_out"]:
        note(f"left out (no metrics for that checkpoint, or no usable feedback): {', '.join(r['left_out'])}")
    say(f"written to {r['path']}")


def _metric_table(r: dict[str, Any], modality: str, title: str, floor_title: str) -> Table:
    """One row per catalogued metric present in ``r``: value (± spread), its floor, and which way is better.

    Labels, formats, floors and directions all come from :mod:`genloop.evaluation.catalog`, so this
    table, the HTML report and ``genloop compare`` cannot disagree about a metric.
    """
    from ..evaluation import catalog

    table = Table(title=title)
    for col in ("metric", "model", floor_title, "better"):
        table.add_column(col, justify="right" if col in ("model", floor_title) else "left")
    for m in catalog.for_modality(modality):
        if r.get(m.key) is None:
            continue
        value = m.format(r[m.key])
        if m.spread and r.get(m.spread) is not None:
            value += f" ± {m.format(r[m.spread])}"
        floor = m.format(r[m.floor]) if m.floor and r.get(m.floor) is not None else ""
        table.add_row(m.label, value, floor, m.better_word)
    return table


def print_text_metrics(r: dict[str, Any]) -> None:
    p = r["loss_protocol"]
    title = (
        f"evaluation of {r['run_id']} ({r['n']} samples of up to {r['sample_settings']['max_tokens']} tokens; "
        f"copies: a span >= {r['memorization']['threshold']} chars from the training text)"
    )
    out.print(_metric_table(r, "text", title, "held-out real text"))
    say(
        f"loss protocol: {p['split']} split, windows of {p['block_size']} tokens every {p['stride']} "
        f"({p['tokens_scored']} of {p['val_tokens']} tokens scored); samples at temperature "
        f"{r['sample_settings']['temperature']}, {r['generation_tokens_per_s']:.0f} tokens/s"
    )
    if "assistant_loss" in r:  # a chat run
        a = r["assistant_protocol"]
        say(
            f"assistant loss {r['assistant_loss']:.4f} (perplexity {r['assistant_perplexity']:.2f}) on the "
            f"{a['tokens_scored']} assistant tokens of {a['conversations']} held-out conversations ({a['template']} "
            f"template; {a['truncated']} truncated, {a['dropped']} too long)"
        )
    for w in r.get("warnings", []):
        note(f"warning: {w}")


def print_music_metrics(r: dict[str, Any]) -> None:
    settings = r.get("sample_settings") or {}
    title = (
        f"evaluation of {r['run_id']} ({r['n']} pieces of {settings.get('bars')} bars; likelihood floor: the best "
        f"n-gram; sample floors: training pieces, both against held-out pieces)"
    )
    out.print(_metric_table(r, "music", title, "floor"))
    say(
        f"likelihood on {r.get('val_tokens', 0):.0f} held-out tokens ({r.get('val_notes', 0):.0f} notes); samples at "
        f"temperature {settings.get('temperature')}, {r.get('generation_tokens_per_s') or 0:.0f} tokens/s"
    )


def print_metrics(r: dict[str, Any]) -> None:
    if "val_nll_per_token" in r:
        print_music_metrics(r)
        return
    if "val_loss" in r and "fid" not in r:
        print_text_metrics(r)
        return
    title = f"evaluation of {r['run_id']} ({r['n_generated']} samples vs {r['n_reference']} held-out real)"
    table = _metric_table(r, "image", title, "real-data floor")
    out.print(table)
    fn = r.get("feature_net", {})
    acc = fn.get("accuracy")
    acc_text = f", held-out accuracy {acc:.3f}" if acc is not None else ""
    q = fn.get("quality") or {}
    if fn.get("kind") == "contrastive" and acc is not None:
        acc_text = f", held-out view-retrieval top-1 {acc:.3f} of {q.get('retrieval_n')}"
    if q.get("linear_probe_accuracy") is not None:
        acc_text += f", linear probe {q['linear_probe_accuracy']:.3f}"
    sampling = f"; sampled with {r['sampler']} in {r['steps']} steps" if "steps" in r else ""
    say(
        f"features: {fn.get('id')} ({fn.get('kind')}{acc_text}); "
        f"floor = {r.get('n_floor')} real training images vs the same held-out set{sampling}; "
        f"{r.get('sampling_ms_per_image', 0):.2f} ms/image to sample"
    )
    from ..evaluation.sanity import format_warning

    warning = format_warning(r.get("sanity"))
    if warning:
        note(warning)


def print_poetry(
    run_id: str, form: str, n: int, seed: int, checkpoint: str, runs_dir: Path | None, device: str, rhyme: bool = True
) -> None:
    """``genloop eval RUN --form F``: the poetry metrics beside held-out real poems (a table + JSON)."""
    from .. import api
    from ..evaluation.poetry_eval import evaluate_poetry

    run = api.RunStore(runs_dir).get(run_id)
    r = evaluate_poetry(run, api.load(run.id, device, runs_dir, checkpoint), form, n, seed, rhyme=rhyme)
    table = Table(title=f"{r['form']} poems of {run.id}: {r['n']} samples vs {r['n_real']} held-out real poems")
    for col in ("metric", "samples", "real poems"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for k in (
        "form_rate",
        "rhyme_rate",
        "tone_agreement",
        "distinct_1",
        "distinct_2",
        "longest_span_mean",
        "copy_rate",
    ):
        table.add_row(k, _fmt(r[k]), _fmt(r[f"{k}_floor"]))
    out.print(table)
    note(f"readings: {r['readings']}; rhyme rate of unrelated line endings (chance): {_fmt(r['rhyme_rate_chance'])}")
    name = f"poetry_{r['form']}.json"
    say(f"written to {run.files.eval / name}")


def print_sanity(run_id: str, features: str, weights: Path | None, runs_dir: Path | None, device: str) -> None:
    """``genloop eval RUN --sanity``: the metric sanity suite's table for the run's data and feature net."""
    from ..evaluation import sanity as sanity_mod

    r = sanity_mod.sanity_for_run(run_id, runs_dir=runs_dir, features=features, weights=weights, device=device)
    fn = r.get("feature_net", {})
    table = Table(title=f"metric sanity of {fn.get('id')} ({fn.get('kind')}) on {r['n_degraded']} held-out images")
    table.add_column("degradation (levels)")
    for m in sanity_mod.METRICS:
        table.add_column(f"{m} ρ", justify="right")
    for row in sanity_mod.rows(r):
        cells = [
            f"[bold red]{c['text']}[/]" if c["miss"] else (c["text"] if c["judged"] else f"[dim]{c['text']}[/]")
            for c in row["cells"]
        ]
        table.add_row(f"{row['label']}: {row['levels']}", *cells)
    out.print(table)
    say(f"modes: {r.get('modes')}; dim: not expected to move; red: expected but ρ < 1; rule: {r['rule']}")
    say(sanity_mod.format_warning(r) or "passed: FID grows steadily with every degradation")
    say(f"written to {r['path']}")


@app.command()
def report(run_id: str = typer.Argument(..., help="Run id."), runs_dir: Path | None = RunsDir) -> None:
    """Write the run's self-contained report.html (samples, loss curves, metrics with floors, config)."""
    from .. import api

    say(str(api.report(run_id, runs_dir=runs_dir)))


@app.command()
def compare(
    run_ids: list[str] = typer.Argument(..., help="Two or more evaluated runs (any families)."),
    out_dir: Path = typer.Option(Path("compare"), "--out", help="Folder for compare.json and compare.png."),
    runs_dir: Path | None = RunsDir,
) -> None:
    """One table and one plot across runs: FID (and its multiple of the floor), KID, precision/recall, ..."""
    from .. import api
    from ..evaluation.compare import best_runs, columns, format_cell, mixed_features_note

    result = api.compare(run_ids, out=out_dir, runs_dir=runs_dir)
    rows = result["rows"]
    cols = columns(rows)
    mixed = mixed_features_note(rows)  # different reference nets: shown per run, nothing ranked across them
    if out.is_terminal:
        best = best_runs(rows)  # the catalogue's direction: lowest FID, highest precision, ...
        title = "comparison (best per metric in bold; floors and std in compare.json)"
        if mixed:
            title = "comparison: NOT RANKED, the runs were scored by different reference networks (see features)"
        table = Table(title=title)
        for c in cols:
            table.add_column(
                c.title,
                no_wrap=c.key == "run_id",
                justify="left" if c.key in ("run_id", "model", "dataset") else "right",
            )
        for r in rows:
            table.add_row(
                *(Text(format_cell(r, c), style="bold" if best.get(c.key) == r["run_id"] else "") for c in cols)
            )
        out.print(table)
    else:  # piped: tab-separated, for scripts
        say("\t".join(c.key for c in cols))
        for r in rows:
            say("\t".join(format_cell(r, c) for c in cols))
    if mixed:
        note(f"warning: {mixed}")
    say(f"written to {result['json']} and {result['png']}")


# --- runs -----------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    model: str | None = typer.Option(None, "--model"),
    status: str | None = typer.Option(None, "--status"),
    dataset: str | None = typer.Option(None, "--dataset"),
    limit: int | None = typer.Option(None, "--limit"),
    runs_dir: Path | None = RunsDir,
) -> None:
    """Runs, newest first."""
    from ..runs import RunStore

    rows = RunStore(runs_dir).list(model=model, status=status, dataset=dataset, limit=limit)
    header = ("id", "model", "dataset", "status", "step", "train_s", "fid", "fid_floor")
    lines = []
    for r in rows:
        s = r.summary or {}
        fid, floor = (f"{s['fid']:.2f}", f"{s['fid_floor']:.2f}") if "fid" in s else ("", "")
        lines.append((r.id, r.model, r.dataset, r.status, str(r.step), f"{r.train_seconds:.0f}", fid, floor))
    if not out.is_terminal:  # piped: one tab-separated line per run, whole ids, for scripts
        for line in [header, *lines]:
            say("\t".join(line))
        return
    table = Table()
    for col in header:
        table.add_column(col, no_wrap=col == "id")
    for line in lines:
        table.add_row(*line)
    out.print(table if rows else "no runs")


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(...), runs_dir: Path | None = RunsDir) -> None:
    """A run's record, config and latest evaluation, as JSON."""
    from ..runs import RunStore
    from ..serialization import read_json

    run = RunStore(runs_dir).get(run_id)
    shown = {"run": run.info, "config": run.config, "dir": str(run.dir)}
    if run.files.eval_metrics().is_file():
        shown["eval"] = read_json(run.files.eval_metrics())
    print(json.dumps(shown, indent=2, default=str))


@runs_app.command("rm")
def runs_rm(
    run_ids: list[str] = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (scripts; needed without a terminal)."),
    runs_dir: Path | None = RunsDir,
) -> None:
    """Delete runs (their whole folders), after asking on a terminal."""
    from ..runs import RunStore
    from .confirm import confirm

    store = RunStore(runs_dir)
    runs = [store.get(rid) for rid in dict.fromkeys(run_ids)]  # every id resolves before anything is asked
    for run in runs:
        note(f"{run.id}  {run.info.get('model')} on {run.info.get('dataset')}, step {run.info.get('step')}  {run.dir}")
    if not confirm(f"delete {len(runs)} run(s) and their folders?", yes):
        note("nothing deleted")
        raise typer.Exit(1)
    for run in runs:
        say(f"removed {store.remove(run.id)}")


# --- demo -----------------------------------------------------------------------------------------
@app.command()
def demo(
    time_budget: str = typer.Option("150s", "--time-budget", help="Training time; the whole demo takes ~30 s more."),
    runs_dir: Path | None = RunsDir,
    n: int = typer.Option(2000, "--n", help="Samples to evaluate."),
) -> None:
    """The main job: train a DCGAN on built-in digits, generate, evaluate, write the report."""
    from importlib.resources import files

    from .. import api

    budget = parse_duration(time_budget)
    config = files("genloop").joinpath("configs/demo_dcgan.yaml")
    note(f"GenLoop demo — DCGAN on scikit-learn's handwritten digits, {budget:.0f}s of training")
    run = api.train("dcgan", config=str(config), time_budget=budget, runs_dir=runs_dir)
    if run.info.get("status") == "interrupted":
        note(f"interrupted; resume with: genloop train --resume {run.id}")
        raise typer.Exit(130)
    paths = api.generate(run.id, n=64, seed=0, runs_dir=runs_dir)
    note("evaluating (the reference feature network trains once per dataset, then is cached)...")
    metrics = api.evaluate(run.id, n=n, runs_dir=runs_dir, progress=True)
    report_path = api.report(run.id, runs_dir=runs_dir)
    print_metrics(metrics)
    say(f"run      {run.id}  ({run.info['step']} steps, {run.info['timings']['images_per_s']:.0f} images/s)")
    say(f"samples  {paths[0]}")
    say(
        f"FID      {metrics['fid']:.2f}  (real-data floor {metrics['fid_floor']:.2f}: "
        f"{metrics['fid'] / max(metrics['fid_floor'], 1e-9):.1f}x the floor)"
    )
    say(f"report   {report_path}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback needs --token."),
    port: int = typer.Option(8000, help="TCP port."),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy URL of the studio database (default: SQLite beside the runs)."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="GENLOOP_API_TOKEN", help="API token required by every /v1 route."
    ),
    workers: int = typer.Option(1, help="Worker processes that run jobs (0: run `genloop worker` yourself)."),
    max_queued: int = typer.Option(32, help="Queued jobs before new ones get 429."),
    runs_dir: Path | None = typer.Option(None, "--runs-dir", envvar="GENLOOP_RUNS_DIR", help="The run store."),
    rules: str | None = typer.Option(
        None,
        "--rules",
        help="Moderation rule files (YAML/JSON/TXT, several joined by ':') added to the built-in list "
        "(env GENLOOP_MODERATION_RULES).",
    ),
    moderation: str | None = typer.Option(
        None,
        "--moderation",
        help="on (default: prompts and outputs checked, blocked requests answered 400 content_filter, every "
        "decision in <runs>/moderation.jsonl) or off for this deployment (env GENLOOP_MODERATION=off).",
    ),
) -> None:
    """Serve the GenLoop Studio (web page at /, API at /v1, docs at /docs) with its job workers."""
    from ..paths import runs_dir as default_runs
    from ..server.serve import serve as run_server
    from ..server.settings import Settings

    settings = Settings.from_env(
        host=host,
        port=port,
        db_url=db,
        token=token,
        workers=workers,
        max_queued=max_queued,
        runs=default_runs(runs_dir),
        moderation_rules=rules,
        moderation=moderation,
    )
    settings.check()
    note(
        f"GenLoop Studio on http://{host}:{port}/  (API docs /docs; runs {settings.runs}; "
        f"{'token required' if settings.token else 'no token: loopback only'})"
    )
    run_server(settings)


@app.command()
def worker(
    db: str | None = typer.Option(
        None,
        "--db",
        "--database-url",
        envvar="GENLOOP_DB_URL",
        help="SQLAlchemy URL of the studio database; a shared PostgreSQL one for workers on several machines.",
    ),
    runs_dir: Path | None = typer.Option(
        None, "--runs-dir", envvar="GENLOOP_RUNS_DIR", help="The run store (shared by every worker and the server)."
    ),
    worker_host: str | None = typer.Option(
        None,
        "--worker-host",
        envvar="GENLOOP_WORKER_HOST",
        help="The host name this worker reports in /v1/health (default: the hostname; a container's is random).",
    ),
    lane: str | None = typer.Option(
        None,
        "--lane",
        envvar="GENLOOP_LANE",
        help="The jobs it takes: interactive (generations), batch (training, evaluation) or all (the default).",
    ),
) -> None:
    """Run studio jobs from the database until stopped (SIGTERM: a training job checkpoints and is re-queued).

    Workers on any number of machines may share one PostgreSQL database and run store; each job runs on one."""
    from ..paths import runs_dir as default_runs
    from ..server.settings import Settings
    from ..server.worker import main as worker_main

    settings = Settings.from_env(db_url=db, runs=default_runs(runs_dir), worker_host=worker_host, lane=lane)
    settings.check_lane()
    worker_main(settings)


@app.command()
def verify(
    files: list[Path] | None = typer.Argument(
        None, metavar="FILE...", help="PNGs, .mid files, texts.jsonl files or .manifest.json sidecars."
    ),
    text: list[Path] = typer.Option(
        [],
        "--text",
        help="A plain-text file to test for the run store's text watermark (repeatable); stripped of any "
        "metadata, the text itself carries the mark.",
    ),
    run: str | None = typer.Option(
        None, "--run", help="With --text: the text run that may have made it (default: try every text run's tokenizer)."
    ),
    runs_dir: Path | None = RunsDir,
) -> None:
    """Check the signed provenance of generated files: one line per file, `valid` (signature good, content
    unchanged, key trusted: with its generation id, model sha256 and time), `tampered` (which field),
    `unsigned` (no manifest), `unknown key` (signed by a key not in the trusted/ folder beside this
    installation's key) or `error` (not a file it can read). A PNG's or MIDI file's line also says what its
    invisible watermark names, signed or not (a stripped file too): `watermark: generation <id> (run <run>)`
    from the run store's watermark index, or `no watermark`. With --text, one line per text file:
    `watermarked` or `no watermark`, with the z-score and p-value. Exit code 0 only when every file is valid
    (and every text watermarked)."""
    from ..safety.provenance import verify_file

    if not files and not text:
        raise ConfigError("give at least one FILE to verify (or --text FILE to test for the text watermark)")
    if run is not None and not text:
        raise ConfigError("--run goes with --text: it names the text run whose tokenizer reads the text")
    # one result per checked item, each with .line() and .ok
    results: list[Any] = [verify_file(path, runs_dir) for path in files or []]
    results += [_text_watermark_result(path, run, runs_dir) for path in text]
    for r in results:
        say(r.line())
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@dataclasses.dataclass
class _TextCheck:
    """``verify --text``: whether one text file carries the run store's green-list watermark."""

    path: Path
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.path}: {self.detail}"


def _text_watermark_result(path: Path, run: str | None, runs_dir: Path | None) -> _TextCheck:
    from ..safety.text_watermark import detect_in_store, detect_text

    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return _TextCheck(path, False, f"error (not a readable UTF-8 text file: {e.__class__.__name__})")
    try:
        if run is not None:
            run_id, found = run, detect_text(content, run, runs_dir)
        else:
            run_id, found = detect_in_store(content, runs_dir)
    except ConfigError as e:
        return _TextCheck(path, False, f"error ({e})")
    if found is None:
        return _TextCheck(path, False, "error (no text run in this run store to read it with)")
    stats = f"z {found.z:.2f}, p {found.p_value:.2g}, {found.tokens_scored} tokens scored, key {found.key_id}"
    if found.watermarked:
        return _TextCheck(path, True, f"watermarked ({stats}; tokenizer of run {run_id})")
    return _TextCheck(path, False, f"no watermark ({stats}; needs z >= {found.z_threshold:g})")


@keys_app.command("export")
def keys_export() -> None:
    """Print the public key (PEM): put it in another installation's keys/trusted/ folder to trust its files."""
    from ..safety import provenance

    sys.stdout.write(provenance.public_pem().decode("ascii"))


@keys_app.command("show")
def keys_show() -> None:
    """Print the key id (the first 16 hex digits of the sha256 of the raw public key), where the key lives,
    and the trusted keys."""
    from ..safety import provenance

    say(f"key id {provenance.key_id()} ({provenance.key_dir() / provenance.PRIVATE_KEY})")
    for kid, pem in provenance.trusted_keys().items():
        say(f"trusted {kid} ({'this installation' if pem is None else pem})")


from .chat import chat_command  # noqa: E402 - `genloop chat` lives in its own module

app.command("chat")(chat_command)
from .edit import edit_command  # noqa: E402 - `genloop edit` lives in its own module

app.command("edit")(edit_command)

from .text_tasks import data_to_text_command, summarize_command  # noqa: E402 - the text tasks' own module

app.command("summarize")(summarize_command)
app.command("data-to-text")(data_to_text_command)

from .export import export_command  # noqa: E402 - `genloop export` lives in its own module

app.command("export")(export_command)
from .c2pa import c2pa_command  # noqa: E402 - `genloop c2pa` lives in its own module

app.command("c2pa")(c2pa_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Typer handles usage errors (exit 2) and Ctrl-C (exit 130); a GenLoopError becomes
    one line on standard error and its exit code (2), never a traceback."""
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="genloop")
    except GenLoopError as e:
        err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)  # Text: no markup parsing
        return e.exit_code
    except OSError as e:  # the file system said no (a file where a folder should be, no space, no permission)
        where = f": {e.filename}" if e.filename else ""
        err.print(Text.assemble(("error: ", "bold red"), f"{e.strerror or e}{where}"), soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
