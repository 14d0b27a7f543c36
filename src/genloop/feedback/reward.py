"""A reward model: predicts how much people like an output, from the ratings and A/B choices they gave.

It is a small MLP head over *fixed* features, so that a few hundred judgments are enough to learn from:

- images: the penultimate features of the dataset's reference net (the classifier GenLoop's metrics
  use, :func:`genloop.evaluation.get_feature_extractor`): what a digit is, how it is drawn;
- text: a fixed, offline featurizer: character 1–4-grams hashed into 4096 buckets (scikit-learn's
  ``HashingVectorizer``, l2-normalised, no vocabulary to fit or ship) plus log length in characters and
  words (the n-gram part is normalised, so it cannot see length on its own).

The head is trained on everything people said at once:

- each preference (chosen, rejected): the Bradley–Terry loss ``-log σ(r_chosen - r_rejected)``;
- each rating: regression of ``r`` onto the stars (standardised over the ratings) or the thumbs (±1).

Accuracy is measured honestly: a seeded 20% of the *generations* is held out, and the model trained on
the rest must order the held-out pairs (explicit preferences between two held-out items, and every pair of
held-out items whose ratings differ). The saved model is then refitted on everything. It is saved as
``reward.safetensors`` (head weights, feature mean/std) beside ``reward.json`` (what features, how
trained, its held-out accuracy) — no pickle.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import __version__
from ..errors import ConfigError, DataError, NotFoundError
from ..serialization import load_tensors, read_json, save_tensors, write_json
from .store import FeedbackStore, GenerationRow

TEXT_FEATURES = {"kind": "char-hashing-v1", "n_features": 4096, "ngram_range": [1, 4]}


# --- features -------------------------------------------------------------------------------------
def text_features(texts: Sequence[str], spec: dict[str, Any] = TEXT_FEATURES) -> torch.Tensor:
    """Hashed character n-grams (l2-normalised) plus log length in characters and words: (N, D) float32."""
    from sklearn.feature_extraction.text import HashingVectorizer

    if spec.get("kind") != TEXT_FEATURES["kind"]:
        raise ConfigError(f"unknown text features '{spec.get('kind')}'; this GenLoop has {TEXT_FEATURES['kind']}")
    vec = HashingVectorizer(
        analyzer="char",
        ngram_range=tuple(spec["ngram_range"]),
        n_features=spec["n_features"],
        alternate_sign=False,
        norm="l2",
        lowercase=False,
    )
    grams = vec.transform([str(t) for t in texts]).toarray().astype(np.float32)
    length = np.array([[math.log1p(len(t)), math.log1p(len(str(t).split()))] for t in texts], dtype=np.float32)
    return torch.from_numpy(np.concatenate([grams, length.reshape(-1, 2)], axis=1))


def read_images(paths: Sequence[str | Path], channels: int) -> torch.Tensor:
    """PNG files -> float images (N, C, H, W) in [-1, 1]."""
    from PIL import Image

    from ..data.image import to_float

    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError) as e:
            raise DataError(f"{p}: not a readable image ({e})") from None
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return to_float(torch.from_numpy(np.stack(arrays)))


class ImageFeatures:
    """The reference net of one image dataset (by its data config), as a featurizer."""

    def __init__(self, data: dict[str, Any]) -> None:
        from ..config import from_dict
        from ..data import DataConfig, load_dataset
        from ..evaluation import get_feature_extractor

        self.data = {k: data[k] for k in ("name", "image_size", "channels", "split", "split_seed") if k in data}
        self.dataset = load_dataset(from_dict(DataConfig, self.data, "data."))
        self.extractor = get_feature_extractor(self.dataset)

    def __call__(self, images: torch.Tensor | Sequence[str | Path]) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            images = read_images(images, self.dataset.channels)
        return self.extractor.features(images).float()


# --- the model ------------------------------------------------------------------------------------
@dataclass
class RewardConfig:
    hidden: int = 64  # width of the MLP head
    epochs: int = 300  # full-batch Adam steps
    lr: float = 3e-3
    weight_decay: float = 1e-2
    pair_weight: float = 1.0  # Bradley–Terry loss on preferences
    rating_weight: float = 0.5  # regression on standardised stars and on thumbs
    heldout: float = 0.2  # share of generations held out to measure accuracy
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.lr <= 0:
            raise ConfigError("reward: hidden and epochs must be >= 1 and lr > 0")
        if not 0 <= self.heldout < 1:
            raise ConfigError(f"reward: heldout must be in [0, 1), got {self.heldout}")


class RewardHead(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class RewardModel:
    """``score(images or texts) -> (N,)`` predicted rating (higher is better; about standardised stars)."""

    def __init__(
        self,
        modality: str,
        features: dict[str, Any],
        head: RewardHead,
        mean: torch.Tensor,
        std: torch.Tensor,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.modality, self.features, self.head = modality, features, head.eval()
        self.mean, self.std, self.info = mean, std, info or {}
        self._images: ImageFeatures | None = None

    @property
    def id(self) -> str:
        return str(self.info.get("id", "reward"))

    def featurize(self, items: Any) -> torch.Tensor:
        from ..modalities import modalities

        return modalities[self.modality].featurize(self, items)  # type: ignore[no-any-return]

    def _image_features(self, items: Any) -> torch.Tensor:
        """The image modality's features: the reference net the model was trained with (checked unchanged)."""
        if self._images is None:
            self._images = ImageFeatures(self.features["data"])
            if self._images.extractor.id != self.features.get("extractor_id"):
                raise DataError(
                    f"the reference net changed since this reward model was trained "
                    f"({self._images.extractor.id} != {self.features.get('extractor_id')}); retrain it"
                )
        return self._images(items)

    @torch.no_grad()
    def score_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)

    def score(self, items: Any) -> torch.Tensor:
        """Predicted rating of each item: image tensors (N, C, H, W) in [-1, 1], PNG paths, or texts."""
        if len(items) == 0:
            return torch.empty(0)
        return self.score_features(self.featurize(items))

    # --- persistence --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder} is a file; a reward model is saved as a folder")
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        save_tensors(folder / "reward.safetensors", {**tensors, "mean": self.mean, "std": self.std})
        write_json(
            folder / "reward.json",
            {
                "modality": self.modality,
                "features": self.features,
                "dim": int(self.mean.numel()),
                "hidden": self.head.net[0].out_features,
                **self.info,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RewardModel:
        folder = Path(folder)
        if not (folder / "reward.json").is_file():
            raise NotFoundError(
                f"{folder}: no reward model here (reward.json is missing); train one with "
                "`genloop feedback train-reward`"
            )
        meta = read_json(folder / "reward.json")
        tensors, _ = load_tensors(folder / "reward.safetensors")
        head = RewardHead(int(meta["dim"]), int(meta["hidden"]))
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        info = {k: v for k, v in meta.items() if k not in ("modality", "features", "dim", "hidden")}
        return cls(meta["modality"], meta["features"], head, tensors["mean"], tensors["std"], info)


# --- training -------------------------------------------------------------------------------------
@dataclass
class FeedbackData:
    """Feedback as index arrays over one feature matrix."""

    ids: list[str]
    x: torch.Tensor  # (N, D) features of each generation
    pairs: torch.Tensor  # (P, 2) long: (chosen, rejected)
    rated: torch.Tensor  # (R,) long: generation of each rating
    targets: torch.Tensor  # (R,) float: standardised stars or ±1 thumbs
    stars_mean: float
    stars_std: float


def _features_of(
    store: FeedbackStore, rows: list[GenerationRow], modality: str, runs_dir: str | Path | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    from ..modalities import modalities

    return modalities[modality].reward_features(store, rows, runs_dir)  # type: ignore[no-any-return]


def collect(
    store: FeedbackStore,
    run_id: str | None = None,
    job_id: str | None = None,
    user: str | None = None,
    modality: str | None = None,
    runs_dir: str | Path | None = None,
) -> tuple[FeedbackData, str, dict[str, Any]]:
    """The store's feedback (filtered) as features and index arrays; returns (data, modality, feature spec)."""
    ratings, prefs, gens = store.feedback_rows(run_id=run_id, job_id=job_id, user=user, modality=modality)
    if not ratings and not prefs:
        where = f" for run {run_id}" if run_id else ""
        raise DataError(
            f"no ratings or preferences in the store{where} yet; rate generations first "
            "(`genloop feedback rate GEN_ID --stars 4`, or `genloop feedback simulate`)"
        )
    kinds = {g.modality for g in gens.values()}
    if len(kinds) > 1:
        names = sorted(kinds)
        raise ConfigError(
            f"the store holds feedback on {', '.join(names[:-1])} and {names[-1]} outputs; "
            f"pick one with --modality {'|'.join(names)}"
        )
    modality = kinds.pop()
    # items in the order feedback arrived (row ids), not by their random ids: the held-out split is then
    # the same for the same feedback, in any store
    ids = list(
        dict.fromkeys([r.generation_id for r in ratings] + [i for p in prefs for i in (p.chosen_id, p.rejected_id)])
    )
    index = {g: i for i, g in enumerate(ids)}
    x, spec = _features_of(store, [gens[g] for g in ids], modality, runs_dir)
    stars = np.array([r.stars for r in ratings if r.stars is not None], dtype=np.float64)
    s_mean = float(stars.mean()) if len(stars) else 3.0
    s_std = float(stars.std()) if len(stars) > 1 and stars.std() > 0 else 1.0
    rated, targets = [], []
    for r in ratings:
        if r.stars is not None:
            rated.append(index[r.generation_id])
            targets.append((r.stars - s_mean) / s_std)
        if r.thumbs is not None:
            rated.append(index[r.generation_id])
            targets.append(float(r.thumbs))
    pairs = torch.tensor([[index[p.chosen_id], index[p.rejected_id]] for p in prefs], dtype=torch.long).reshape(-1, 2)
    data = FeedbackData(
        ids, x, pairs, torch.tensor(rated, dtype=torch.long), torch.tensor(targets, dtype=torch.float32), s_mean, s_std
    )
    return data, modality, spec


def _fit_head(
    x: torch.Tensor, pairs: torch.Tensor, rated: torch.Tensor, targets: torch.Tensor, cfg: RewardConfig
) -> tuple[RewardHead, torch.Tensor, torch.Tensor]:
    # centre each feature but scale all of them by one number (their mean spread): per-feature scaling
    # would blow a hashed n-gram seen twice up into the loudest input, and the head would memorise it
    spread = float(x.std(0).mean()) if len(x) > 1 else 1.0
    mean, std = x.mean(0), torch.full((x.shape[1],), max(spread, 1e-6))
    xs = (x - mean) / std
    torch.manual_seed(cfg.seed)
    head = RewardHead(x.shape[1], cfg.hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        r = head(xs)
        loss = torch.zeros(())
        if len(pairs):
            loss = loss + cfg.pair_weight * F.softplus(-(r[pairs[:, 0]] - r[pairs[:, 1]])).mean()
        if len(rated):
            loss = loss + cfg.rating_weight * F.mse_loss(r[rated], targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval(), mean, std


def _item_values(n: int, rated: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean rating target of each item (NaN where unrated)."""
    total = torch.zeros(n).index_add_(0, rated, targets)
    count = torch.zeros(n).index_add_(0, rated, torch.ones_like(targets))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full((n,), float("nan")))


def pair_accuracy(scores: torch.Tensor, pairs: torch.Tensor) -> float | None:
    """Share of (chosen, rejected) pairs the scores order correctly (ties count half)."""
    if len(pairs) == 0:
        return None
    d = scores[pairs[:, 0]] - scores[pairs[:, 1]]
    return float(((d > 0).float() + 0.5 * (d == 0).float()).mean())


def heldout_pairs(items: torch.Tensor, data: FeedbackData, max_pairs: int = 5000, seed: int = 0) -> torch.Tensor:
    """Pairs among ``items`` only: explicit preferences, then every pair whose mean ratings differ."""
    inside = torch.zeros(len(data.ids), dtype=torch.bool)
    inside[items] = True
    explicit = data.pairs[inside[data.pairs[:, 0]] & inside[data.pairs[:, 1]]] if len(data.pairs) else data.pairs
    values = _item_values(len(data.ids), data.rated, data.targets)[items]
    ok = ~torch.isnan(values)
    it, v = items[ok], values[ok]
    i, j = torch.triu_indices(len(it), len(it), 1)
    keep = v[i] != v[j]
    i, j = i[keep], j[keep]
    implied = torch.stack([torch.where(v[i] > v[j], it[i], it[j]), torch.where(v[i] > v[j], it[j], it[i])], 1)
    if len(implied) > max_pairs:
        implied = implied[torch.randperm(len(implied), generator=torch.Generator().manual_seed(seed))[:max_pairs]]
    return torch.cat([explicit.reshape(-1, 2), implied.reshape(-1, 2)])


def train_reward(
    store: FeedbackStore,
    run_id: str | None = None,
    job_id: str | None = None,
    user: str | None = None,
    modality: str | None = None,
    cfg: RewardConfig | None = None,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> tuple[RewardModel, dict[str, Any]]:
    """Train a reward model on the store's feedback (filtered by run, job, user, modality).

    Returns the model (refitted on all the feedback) and a report with the held-out pairwise accuracy
    of a model fitted without the held-out generations. With ``out`` the model is saved there.
    """
    cfg = cfg or RewardConfig()
    t0 = time.perf_counter()
    data, modality, spec = collect(store, run_id, job_id, user, modality, runs_dir)
    n = len(data.ids)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_held = int(round(cfg.heldout * n)) if n >= 10 else 0
    held, train = perm[:n_held], perm[n_held:]
    report: dict[str, Any] = {
        "modality": modality,
        "generations": n,
        "ratings": int(len(data.targets)),
        "preferences": int(len(data.pairs)),
        "heldout_generations": int(n_held),
    }
    if n_held:
        in_train = torch.zeros(n, dtype=torch.bool)
        in_train[train] = True
        tp = data.pairs[in_train[data.pairs[:, 0]] & in_train[data.pairs[:, 1]]] if len(data.pairs) else data.pairs
        tr = in_train[data.rated] if len(data.rated) else torch.zeros(0, dtype=torch.bool)
        head, mean, std = _fit_head(data.x, tp, data.rated[tr], data.targets[tr], cfg)
        # the features' mean/std come from every item: they use no label, so nothing leaks
        scores = head((data.x - mean) / std).detach()
        hp = heldout_pairs(held, data, seed=cfg.seed)
        report.update(
            {
                "heldout_pairs": int(len(hp)),
                "heldout_pair_accuracy": pair_accuracy(scores, hp),
                "train_pair_accuracy": pair_accuracy(scores, heldout_pairs(train, data, seed=cfg.seed)),
            }
        )
    head, mean, std = _fit_head(data.x, data.pairs, data.rated, data.targets, cfg)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report.update({"seconds": round(time.perf_counter() - t0, 2), "config": asdict(cfg)})
    info = {
        "id": f"reward-{modality}-{stamp}",
        "created": stamp,
        "trained_on": {"run_id": run_id, "job_id": job_id, "user": user},
        "stars_mean": data.stars_mean,
        "stars_std": data.stars_std,
        "report": report,
        "genloop_version": __version__,
    }
    model = RewardModel(modality, spec, head, mean, std, info)
    if out is not None:
        model.save(out)
    return model, report


def default_reward_dir(runs_dir: str | Path | None = None) -> Path:
    """Where `genloop feedback train-reward` saves by default: ``<runs>/rewards/latest``."""
    from ..paths import runs_dir as _runs_dir

    return _runs_dir(runs_dir) / "rewards" / "latest"
