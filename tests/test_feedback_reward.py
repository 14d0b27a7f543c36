"""The reward model learns a planted preference from stored ratings and A/B choices, measured on held-out
generations; it round-trips through safetensors + JSON; bad input gives one-line errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from genloop.errors import DataError, NotFoundError
from genloop.feedback.reward import RewardConfig, RewardModel, pair_accuracy, text_features, train_reward
from genloop.feedback.simulate import make_rater, rate
from genloop.feedback.store import FeedbackStore
from genloop.generation.text_pipeline import TextOutput

WORDS = "the a of on sat ran dog fox fog mat log sun red big old new cat bat hat".split()


def random_texts(n: int, seed: int) -> list[str]:
    g = random.Random(seed)
    return [" ".join(g.choice(WORDS) for _ in range(g.randint(2, 14))) for _ in range(n)]


@pytest.fixture()
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(url=f"sqlite:///{tmp_path / 'studio.sqlite'}", media_dir=tmp_path / "media")


def fill(store: FeedbackStore, rater_spec: str, n: int = 160, seed: int = 0) -> list[str]:
    texts = random_texts(n, seed)
    ids = store.add_outputs(TextOutput(texts, "", {"run_id": "r", "model": "gpt", "seed": 0}), job_id="j")
    rate(store, make_rater(rater_spec), ids, texts, n_pairs=n, seed=seed)
    return texts


@pytest.mark.parametrize("spec, floor", [("contains:cat", 0.85), ("short:30", 0.75)])  # length is graded: harder
def test_learns_a_planted_preference(store: FeedbackStore, spec: str, floor: float, tmp_path: Path) -> None:
    fill(store, spec)
    model, report = train_reward(store, cfg=RewardConfig(epochs=200), out=tmp_path / "rm")
    assert report["heldout_pairs"] >= 50 and report["preferences"] > 100
    assert report["heldout_pair_accuracy"] > floor, report  # far above chance (0.5)
    # and on brand-new texts, ordered by the rater's own preference
    fresh = random_texts(200, seed=99)
    rater = make_rater(spec)
    v = torch.tensor(rater.value(fresh))
    s = model.score(fresh)
    i, j = torch.triu_indices(200, 200, 1)
    keep = v[i] != v[j]
    pairs = torch.stack([torch.where(v[i] > v[j], i, j), torch.where(v[i] > v[j], j, i)], 1)[keep]
    assert pair_accuracy(s, pairs) > floor
    loaded = RewardModel.load(tmp_path / "rm")
    assert torch.allclose(loaded.score(fresh), s) and loaded.modality == "text"
    assert (tmp_path / "rm" / "reward.safetensors").is_file() and (tmp_path / "rm" / "reward.json").is_file()


def test_training_is_seeded(store: FeedbackStore) -> None:
    fill(store, "contains:cat", n=60)
    a, _ = train_reward(store, cfg=RewardConfig(epochs=50, seed=3))
    b, _ = train_reward(store, cfg=RewardConfig(epochs=50, seed=3))
    texts = random_texts(10, 5)
    assert torch.equal(a.score(texts), b.score(texts))


def test_text_features_are_fixed_and_see_length() -> None:
    x = text_features(["abc", "abc abc abc abc"])
    assert x.shape == (2, 4096 + 2) and torch.equal(x, text_features(["abc", "abc abc abc abc"]))
    assert x[1, -2] > x[0, -2]


def test_bad_input(store: FeedbackStore, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no ratings or preferences"):
        train_reward(store)
    with pytest.raises(NotFoundError, match="no reward model here"):
        RewardModel.load(tmp_path / "nothing")
