"""Recipes: settings chosen from the user's data and budget (``genloop train --recipe auto --data FOLDER``).

A :class:`Recipe` is a model family (one for unlabelled data, one for labelled data, each by preference: the
first one registered trains) with the settings that suit a kind of data, and a one-line reason. :func:`pick`
looks at a :class:`DataSummary` (what :func:`summarize` reads from the data, cheaply: how many images, their
native size, grey or colour, labelled or not) and the time budget, and returns a :class:`Choice`: the family,
the settings, and every reason, for the user to read. The settings are then layered like any others (family
defaults < recipe < config file < ``--set`` < explicit arguments, :func:`genloop.resolve.resolve_config`), so
``config.json`` holds them and ``--set`` still wins.

The rules for images, first match wins (``n`` images, native side ``s`` px, ``B`` the time budget):

============================  ============================  ====================================================
rule                          recipe                        family (unlabelled / labelled)
============================  ============================  ====================================================
grey and ``s <= 32``          ``digits-like``               dcgan / cgan, 32 px, their defaults, no flips
``n > 5000``                  ``large-images``              dcgan / cgan, flips, 32 or 64 px
``B >= 3 h``                  ``small-rgb-diffusion``       ddpm (v-prediction, width 64, attention at 16 px,
                                                            dropout 0.1, lr 1e-4, warm-up, EMA 0.999) /
                                                            ddpm with ``class_conditional``
otherwise                     ``small-rgb-gan``             resgan (else dcgan) with DiffAugment + ADA and flips /
                                                            resgan ``class_conditional`` (else cgan)
============================  ============================  ====================================================

The image size is the data's own, rounded to the nearest of 32 and 64 (64 for anything larger); the batch is
``min(64, n // 4)`` rounded down to a power of two, at least 8. Text and music data get their modality's
default family with its defaults: no recipe tunes them yet, and the choice says so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, NotFoundError

AUTO = "auto"
DEFAULTS = "defaults"  # the choice's name when no recipe fits: the family's defaults, sized to the data and budget
DEFAULT_BUDGET = 1800.0  # seconds: the budget chosen when the user gives neither --steps nor --time-budget
LARGE = 5000  # more images than this: a plain GAN needs no augmentation in the discriminator
SMALL_GREY = 32  # grey images no larger than this (px) are digits-like
DIFFUSION_BUDGET = 3 * 3600.0  # seconds: from this budget on, diffusion's slow, stable training pays off
BATCH_MAX, BATCH_MIN = 64, 8


@dataclass
class DataSummary:
    """What a recipe looks at. ``native_size`` is None for data without pixels (text, music)."""

    name: str
    default_family: str  # the data's modality's default family
    count: int | None = None  # images (or files)
    native_size: int | None = None  # the median shorter side, px
    channels: int | None = None  # 1 grey, 3 RGB, 4 RGBA
    class_names: list[str] | None = None  # None: unlabelled

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    @property
    def grey(self) -> bool:
        return self.channels == 1

    def describe(self) -> str:
        if self.native_size is None:
            return f"{self.count} file{'s' if self.count != 1 else ''}" if self.count else f"'{self.name}'"
        colour = {1: "grey", 3: "RGB", 4: "RGBA"}.get(self.channels or 3, "RGB")
        labels = f"{len(self.class_names)} classes" if self.class_names else "unlabelled"
        return f"{self.count:,} {colour} images of {self.native_size} px, {labels}"


@dataclass(frozen=True)
class Recipe:
    """A named set of settings for one kind of data."""

    name: str
    why: str  # one line: why these settings suit the data the rule picks this recipe for
    rule: str  # when ``auto`` picks it, in words (``genloop train --help``)
    families: tuple[str, ...]  # unlabelled data: the first registered family trains
    labelled: tuple[tuple[str, dict[str, Any]], ...]  # labelled data: (family, extra model settings), by preference
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # model / data / train
    image_size: Callable[[int], int] | None = None  # native size -> data.image_size (None: the nearest of 32/64)

    def applies(self, summary: DataSummary, budget: float | None) -> bool:
        return _RULES[self.name](summary, budget)


def nearest_size(native: int) -> int:
    """The data's own size, rounded to the nearest of 32 and 64 (a tie goes to the smaller: shrinking loses
    less than inventing pixels)."""
    return 64 if native > 48 else 32


def batch_size(count: int) -> int:
    """``min(64, count // 4)`` rounded down to a power of two, at least 8."""
    b = max(BATCH_MIN, min(BATCH_MAX, count // 4))
    return 1 << (b.bit_length() - 1)


_AUGMENT = {"augment": "color,translation,cutout", "ada": True}
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "digits-like",
            "small grey images like digits: a small GAN at 32 px with its family's defaults trains in minutes on a "
            "CPU; "
            "no flips (a flipped 7 is no 7)",
            f"grey images of at most {SMALL_GREY} px",
            ("dcgan",),
            (("cgan", {}),),
            {"data": {"flip": False}},
            image_size=lambda native: 32,
        ),
        Recipe(
            "large-images",
            f"over {LARGE:,} images: enough for a plain DCGAN without augmenting what its discriminator sees; "
            "flips double the variety for free",
            f"more than {LARGE:,} images",
            ("dcgan",),
            (("cgan", {}),),
            {"data": {"flip": True}},
        ),
        Recipe(
            "small-rgb-diffusion",
            "diffusion trains stably on a few hundred images and, given hours, covers them better than a GAN "
            "(v-prediction, a 64-wide UNet with attention at 16 px, dropout 0.1 against memorising, lr 1e-4 "
            "with warm-up, EMA 0.999)",
            f"up to {LARGE:,} images and a budget of {DIFFUSION_BUDGET / 3600:.0f} h or more",
            ("ddpm",),
            (("ddpm", {"class_conditional": True}),),
            {
                "model": {
                    "prediction_type": "v_prediction",
                    "width": 64,
                    "channel_mults": [1, 2, 2, 2],
                    "attention_resolutions": [16],
                    "dropout": 0.1,
                },
                "data": {"flip": True},
                "train": {"lr": 1e-4, "warmup_steps": 500, "ema_decay": 0.999},
            },
        ),
        Recipe(
            "small-rgb-gan",
            "few images, so differentiable augmentation (color, translation, cutout) with ADA between every "
            "image and the discriminator keeps it from memorising them; flips",
            f"up to {LARGE:,} images, a budget under {DIFFUSION_BUDGET / 3600:.0f} h",
            ("resgan", "dcgan"),
            (("resgan", {"class_conditional": True}), ("cgan", {})),
            {"model": dict(_AUGMENT), "data": {"flip": True}},
        ),
    )
}
_RULES: dict[str, Callable[[DataSummary, float | None], bool]] = {
    "digits-like": lambda s, b: s.grey and (s.native_size or 0) <= SMALL_GREY,
    "large-images": lambda s, b: (s.count or 0) > LARGE,
    "small-rgb-diffusion": lambda s, b: b is not None and b >= DIFFUSION_BUDGET,
    "small-rgb-gan": lambda s, b: True,
}


@dataclass
class Choice:
    """What a recipe chose: the family, its settings (``model``/``data``/``train`` sections) and why."""

    name: str
    model: str
    overrides: dict[str, dict[str, Any]]
    reasons: list[str]

    def headline(self) -> str:
        size = self.overrides.get("data", {}).get("image_size")
        return f"recipe {self.name}: {self.model}" + (f" at {size} px" if size else "")

    def settings_list(self) -> list[str]:
        """The settings as ``section.key=value`` lines, as ``--set`` would write them."""
        import json

        def text(v: Any) -> str:
            return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict, bool)) or v is None else str(v)

        return [f"{section}.{k}={text(v)}" for section, values in self.overrides.items() for k, v in values.items()]

    def lines(self, config: Any = None, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
        """What the CLI prints: the headline, then one line per reason and the settings chosen, and which of
        them the user's config file or ``--set`` overrides."""
        out = [
            f"{self.headline()} — {self.reasons[0]}",
            *(f"  {r}" for r in self.reasons[1:]),
            f"  settings: {' '.join(self.settings_list())}",
        ]
        mine = [k for k in _user_keys(config, overrides) if k[1] in self.overrides.get(k[0], {})]
        if mine:
            out.append(f"  yours win: {', '.join('.'.join(k) for k in mine)} (from --config/--set)")
        return out

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps under ``recipe``."""
        return {"name": self.name, "model": self.model, "reasons": list(self.reasons), "settings": self.overrides}


def names() -> list[str]:
    """The valid ``--recipe`` values."""
    return [AUTO, *RECIPES]


def check_name(recipe: str) -> None:
    if recipe != AUTO and recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}'; valid: {', '.join(names())}")


# --- reading the data -----------------------------------------------------------------------------
def summarize(data: str | None, model: str | None = None) -> DataSummary:
    """A :class:`DataSummary` of ``--data``: the modality is ``model``'s, or (no model) the one that claims the
    data most strongly (the most files it would read; a built-in name outranks any folder)."""
    from .modalities import modalities
    from .systems import models

    if model is not None:
        modality = modalities[models[model].modality]
        data = data if data is not None else modality.data_config_cls().name
    elif data is None:
        raise ConfigError("--recipe looks at your data to choose a model: pass --data FOLDER (or name a model)")
    else:
        claims = sorted(
            ((m.data_claim(data), i, m) for i, m in enumerate(modalities[n] for n in modalities.names())), reverse=True
        )
        if not claims or claims[0][0] == 0:
            from pathlib import Path

            if not Path(data).expanduser().exists():
                raise NotFoundError(f"--data {data}: not a built-in dataset and no such file or folder")
            raise ConfigError(
                f"--data {data}: no data any modality ({', '.join(modalities.names())}) can read there; "
                "name a model to read it as that model's data"
            )
        modality = claims[0][2]
    found = modality.data_summary(data)
    if found is None:
        return DataSummary(data, modality.default_family, count=_count(modality, data))
    return DataSummary(data, modality.default_family, **found)


def _count(modality: Any, data: str) -> int | None:
    from .modalities.base import BUILTIN_CLAIM

    n = modality.data_claim(data)
    return None if n in (0, BUILTIN_CLAIM) else n


# --- choosing ---------------------------------------------------------------------------------------
def _family(recipe: Recipe, summary: DataSummary, available: Collection[str]) -> tuple[str, dict, list[str]]:
    """The recipe's family for this data (the first registered one), extra model settings, and notes."""
    options = recipe.labelled if summary.labelled else tuple((f, {}) for f in recipe.families)
    for i, (family, extra) in enumerate(options):
        if family in available:
            skipped = [f for f, _ in options[:i]]
            notes = [f"{', '.join(skipped)} is not registered here: {family} instead"] if skipped else []
            return family, dict(extra), notes
    raise ConfigError(f"recipe {recipe.name}: none of its families ({', '.join(f for f, _ in options)}) is registered")


def _for_model(recipe: Recipe, model: str, summary: DataSummary) -> dict[str, Any] | None:
    """The extra model settings of ``recipe`` for the family ``model``, or None when the recipe has no part for it."""
    if summary.labelled:
        for family, extra in recipe.labelled:
            if family == model:
                return dict(extra)
    return {} if model in recipe.families or any(f == model for f, _ in recipe.labelled) else None


def pick(
    summary: DataSummary,
    budget_seconds: float | None,
    model: str | None = None,
    recipe: str = AUTO,
    available: Collection[str] | None = None,
) -> Choice:
    """The recipe for ``summary`` (``recipe``: ``auto`` or a name) under a time budget (None: steps decide).

    ``model``: the family the user named; only recipes with a part for it are considered (none fits: its
    defaults, sized to the data). ``available``: the registered families (default: :data:`genloop.systems.models`).
    """
    check_name(recipe)
    if available is None:
        from .systems import models

        available = models.names()
    if model is not None and model not in available:
        raise ConfigError(f"unknown model '{model}'; valid: {', '.join(available)}")
    if summary.native_size is None:  # no pixels: nothing here tunes the family, so its defaults train
        if recipe != AUTO:
            raise ConfigError(f"recipe {recipe} is for images; '{summary.name}' is not image data")
        family = model or summary.default_family
        why = f"{summary.describe()}: {family} with its defaults (no recipe tunes this kind of model yet)"
        return Choice(DEFAULTS, family, {"model": {}, "data": {}, "train": {}}, [why])

    reasons = [summary.describe()]
    chosen: Recipe | None = None
    if recipe != AUTO:
        chosen = RECIPES[recipe]
        reasons.append(f"{recipe} as asked: {RECIPES[recipe].why}")
    else:
        candidates = list(RECIPES.values())
        if model is not None:
            candidates = [r for r in candidates if _for_model(r, model, summary) is not None]
        order = sorted(candidates, key=lambda r: list(_RULES).index(r.name))
        chosen = next((r for r in order if r.applies(summary, budget_seconds)), None)
        if chosen is not None:
            reasons.append(f"{chosen.rule}: {chosen.why}")
        elif order:  # the user's family has recipes, but none whose rule fits this data: its first one
            chosen = order[0]
            reasons.append(f"the recipe for {model}: {chosen.why}")

    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    if chosen is None:  # the user's family has no recipe: its defaults, sized to the data
        family = model or summary.default_family
        reasons.append(f"no recipe is tuned for {family}: its defaults, sized to the data")
        name = DEFAULTS
    else:
        if model is not None:
            extra = _for_model(chosen, model, summary)
            if extra is None:
                raise ConfigError(f"recipe {chosen.name} trains {', '.join(chosen.families)}, not {model}")
            family, notes = model, list[str]()
        else:
            family, extra, notes = _family(chosen, summary, available)
        reasons += notes
        for section, values in chosen.settings.items():
            sections[section].update(values)
        sections["model"].update(extra)
        if summary.labelled and (extra or family not in chosen.families):
            reasons.append(f"labelled: {family} conditioned on the {len(summary.class_names or [])} classes")
        name = chosen.name
    size_of = chosen.image_size if chosen is not None and chosen.image_size else nearest_size
    sections["data"]["image_size"] = size_of(summary.native_size)
    if sections["data"]["image_size"] != summary.native_size:
        reasons.append(f"image size {sections['data']['image_size']} px (the data's are {summary.native_size} px)")
    if summary.count:
        sections["train"]["batch_size"] = batch_size(summary.count)
        reasons.append(f"batch {sections['train']['batch_size']}: min(64, images / 4) as a power of two, at least 8")
    return Choice(name, family, sections, reasons)


def budget_settings(choice: Choice, steps: int | None, time_budget: float | None, user_sets_end: bool) -> None:
    """Add the budget's settings to ``choice``: a default time budget when the user set no end of training,
    and sample/checkpoint cadence to suit the end there is."""
    train = choice.overrides.setdefault("train", {})
    if steps is None and time_budget is None and not user_sets_end:
        time_budget = DEFAULT_BUDGET
        train.update(time_budget=DEFAULT_BUDGET, steps=None)
        choice.reasons.append(
            f"no --steps or --time-budget: a {DEFAULT_BUDGET / 60:.0f} min budget (pass either to change it)"
        )
    if time_budget is not None:
        every = float(min(600.0, max(60.0, time_budget / 6)))
        train["checkpoint_seconds"] = every
        choice.reasons.append(f"a checkpoint every {every:.0f} s: six or more over the {time_budget:.0f} s budget")
    elif steps is not None:
        train.update(sample_every=max(1, steps // 10), checkpoint_every=max(1, steps // 4), log_every=min(10, steps))
        choice.reasons.append(
            f"samples every {train['sample_every']} and checkpoints every "
            f"{train['checkpoint_every']} of the {steps} steps"
        )


def _user_keys(config: Any, overrides: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The (section, key) settings a config file and ``--set`` give, in that order, each once."""
    from .config import load_yaml, parse_override

    keys: list[tuple[str, str]] = []
    cfg = config if isinstance(config, dict) or config is None else load_yaml(config)
    for section, values in (cfg or {}).items() if isinstance(cfg, dict) else ():
        if isinstance(values, dict):
            keys += [(section, k) for k in values]
    for o in overrides:
        path = parse_override(o)[0]
        if len(path) == 2:
            keys.append((path[0], path[1]))
    return list(dict.fromkeys(keys))


def sets_end(config: Any, overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether a config file or ``--set`` decides when training ends (then no default budget is chosen)."""
    return any(k in (("train", "steps"), ("train", "time_budget")) for k in _user_keys(config, overrides))


def choose(
    data: str | None,
    model: str | None = None,
    recipe: str = AUTO,
    config: Any = None,
    overrides: list[str] | tuple[str, ...] = (),
    steps: int | None = None,
    time_budget: float | None = None,
) -> Choice:
    """The whole choice for ``genloop train --recipe``: read the data, pick, add the budget's settings."""
    check_name(recipe)
    summary = summarize(data, model)
    user_end = sets_end(config, overrides)
    budget = time_budget if time_budget is not None else (None if steps is not None or user_end else DEFAULT_BUDGET)
    choice = pick(summary, budget, model, recipe)
    budget_settings(choice, steps, time_budget, user_end)
    return choice
