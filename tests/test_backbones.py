"""Standard backbones: the FID Inception weights downloaded with their checksum, and ``--features hf:PATH``.

Nothing downloads: the "server" is a ``file://`` URL to a file made here, and the Hugging Face models are
tiny random DINOv2 and CLIP models built here and saved with ``save_pretrained`` (the real loading path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny

import genloop
from genloop.errors import ConfigError, DataError, NotFoundError
from genloop.evaluation import inception
from genloop.evaluation.backbones import features_tag, load_hf_backbone, read_preprocess
from genloop.paths import cache_dir
from genloop.serialization import sha256_file

DINO_PREPROCESS = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 36},
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "do_convert_rgb": True,
}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random DINOv2 (with a preprocessor config) and a full CLIP (text + vision, without one)."""
    import transformers

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    dino = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    transformers.Dinov2Model(dino).save_pretrained(root / "dinov2-tiny")
    (root / "dinov2-tiny" / "preprocessor_config.json").write_text(json.dumps(DINO_PREPROCESS))
    clip = transformers.CLIPConfig(
        text_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "vocab_size": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 24,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 48,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    transformers.CLIPModel(clip).save_pretrained(root / "clip-tiny")
    bert = transformers.BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    transformers.BertModel(bert).save_pretrained(root / "bert-tiny")
    return {"dino": root / "dinov2-tiny", "clip": root / "clip-tiny", "bert": root / "bert-tiny"}


def test_dinov2_and_clip_towers_give_pooled_features(hf_models) -> None:
    import transformers

    images = torch.rand(6, 3, 20, 28) * 2 - 1
    for name, dim in (("dino", 32), ("clip", 24)):
        ex = load_hf_backbone(hf_models[name])
        assert ex.kind == "hf" and ex.feature_dim == dim and ex.id.startswith("hf:")
        f, p = ex.features_and_probs(images, batch_size=4)  # two batches
        assert f.shape == (6, dim) and f.dtype == torch.float64 and p.shape == (6, 0)
        assert torch.equal(f, ex.features(images))  # deterministic (eval mode)
        # grey is repeated to RGB; uint8 is read as [0, 255]
        grey = images[:, :1]
        assert torch.allclose(ex.features(grey), ex.features(grey.expand(-1, 3, -1, -1)))
        # the pooled output of the model itself, on the preprocessed pixels
        with torch.no_grad():
            ref = ex.model(pixel_values=ex.preprocess(images)).pooler_output.double()
        assert torch.allclose(f, ref, atol=1e-6)
    # a full CLIP folder loads its image tower only
    assert isinstance(load_hf_backbone(hf_models["clip"]).model, transformers.CLIPVisionModel)


def test_preprocessing_follows_the_folder_config_like_the_hf_processor(hf_models) -> None:
    """Resize shortest edge, centre crop, normalise: our torch version against transformers' PIL processor."""
    import transformers

    proc = transformers.AutoImageProcessor.from_pretrained(hf_models["dino"], local_files_only=True, use_fast=False)
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    theirs = proc(images=[img], return_tensors="pt")["pixel_values"].float()
    ours = read_preprocess(hf_models["dino"], None)(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    # PIL resizes in uint8 and torch in float, so pixels differ by a few levels; a wrong crop offset,
    # size or normalisation would differ by far more
    assert (ours - theirs).abs().mean() < 0.02
    # without a preprocessor config: the model's image size and CLIP's statistics for CLIP
    pre = load_hf_backbone(hf_models["clip"]).preprocess
    assert pre.resize == (32, 32) and pre.crop is None and pre.mean[0] == pytest.approx(0.48145466)


def test_hf_errors_are_one_line(hf_models, tmp_path) -> None:
    with pytest.raises(NotFoundError, match="no such model folder"):
        load_hf_backbone(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        load_hf_backbone(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not take images"):
        load_hf_backbone(hf_models["bert"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "dinov2"}')
    with pytest.raises(DataError) as e:
        load_hf_backbone(broken)
    assert "\n" not in str(e.value)


def test_features_tag_is_a_file_name_per_folder(tmp_path) -> None:
    assert features_tag("ref") == "ref" and features_tag("inception") == "inception"
    a, b = features_tag(f"hf:{tmp_path / 'x' / 'dinov2 small'}"), features_tag(f"hf:{tmp_path / 'y' / 'dinov2 small'}")
    assert a.startswith("hf-dinov2-small-") and a != b and "/" not in a and " " not in a


def test_eval_with_hf_features_end_to_end(hf_models, tmp_path) -> None:
    """`genloop.evaluate(..., features="hf:PATH")`: FID/KID/PRDC on the model's features, no IS, own file."""
    from genloop.config import from_dict
    from genloop.data import DataConfig, load_dataset
    from genloop.evaluation import frechet_distance

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=images, labels=np.arange(60) % 2)
    run = genloop.train("dcgan", data=str(tmp_path / "rgb.npz"), overrides=tiny("dcgan"), steps=2, progress=False)
    features = f"hf:{hf_models['dino']}"
    r = genloop.evaluate(run.id, n=12, features=features)
    assert r["feature_net"]["kind"] == "hf" and r["feature_net"]["feature_dim"] == 32
    assert r["feature_net"]["accuracy"] is None and "is" not in r and "class_accuracy" not in r
    assert {"fid", "fid_floor", "kid", "precision", "recall", "density", "coverage"} <= set(r)
    # the same FID, computed independently on the same samples and held-out images
    ex = load_hf_backbone(hf_models["dino"])
    ds = load_dataset(from_dict(DataConfig, run.config["data"], "data."))
    real = torch.cat([ds.get(s)[0] for s in ("val", "test")])
    fake = genloop.load(run.id)(n=12, seed=1_000_000).tensors
    fr, ff = (ex.features(x).numpy() for x in (real, fake))
    expected = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert r["fid"] == pytest.approx(expected, rel=1e-4)
    tag = features_tag(features)
    assert (run.dir / "eval" / f"metrics_{tag}.json").is_file()
    assert (run.dir / "eval" / "by_checkpoint" / f"{tag}-{r['checkpoint_sha256'][:16]}.json").is_file()
    with pytest.raises(ConfigError, match="--weights goes with --features inception"):
        genloop.evaluate(run.id, n=12, features=features, weights=tmp_path / "w.pth")


# --- the FID Inception weights, downloaded on first use ---------------------------------------------------


def test_inception_weights_download_once_with_their_checksum(tmp_path, monkeypatch) -> None:
    """A good file is fetched into the cache and then used without the network."""
    server = tmp_path / "server"
    server.mkdir()
    weights = server / inception.FID_WEIGHTS_NAME
    torch.manual_seed(0)
    state = {k: v for k, v in inception.FIDInceptionV3().state_dict().items() if "num_batches" not in k}
    torch.save(state, weights)
    digest = sha256_file(weights)
    monkeypatch.setattr(inception, "FID_WEIGHTS_URLS", [weights.as_uri()])
    monkeypatch.setattr(inception, "FID_WEIGHTS_SHA256", digest[:8])  # a published prefix, like the real one
    ex = inception.load_inception(None)
    cached = Path(inception.fid_weights_path())
    assert cached.parent.name == "weights" and sha256_file(cached) == digest and ex.sha256 == digest
    weights.unlink()  # "offline" now: the verified cached copy is enough
    assert inception.load_inception().sha256 == digest


def test_inception_download_with_a_bad_checksum_is_not_kept(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "server.pth"
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(inception, "FID_WEIGHTS_URLS", [bad.as_uri()])
    with pytest.raises(NotFoundError) as e:
        inception.load_inception(None)
    msg = str(e.value)
    assert "\n" not in msg and "wrong checksum" in msg and "--weights PATH" in msg
    folder = cache_dir("weights")
    assert list(folder.iterdir()) == []  # neither the file nor a temporary left behind
    # a corrupt copy already in the cache is not trusted either, and is removed
    (folder / inception.FID_WEIGHTS_NAME).write_bytes(b"corrupt")
    with pytest.raises(NotFoundError, match="wrong checksum"):
        inception.load_inception(None)
    assert list(folder.iterdir()) == []
    # offline: one line saying what to fetch and where
    monkeypatch.setattr(inception, "FID_WEIGHTS_URLS", [(tmp_path / "nowhere.pth").as_uri()])
    with pytest.raises(NotFoundError) as e:
        inception.load_inception(None)
    assert "\n" not in str(e.value) and inception.FID_WEIGHTS_NAME in str(e.value) and str(folder) in str(e.value)


def test_a_checksum_prefix_needs_at_least_8_digits(tmp_path) -> None:
    from genloop.data.builtin import _sha256_ok

    digest = "ab" * 32
    assert _sha256_ok(digest, digest) and _sha256_ok(digest, digest[:8].upper())
    assert not _sha256_ok(digest, digest[:7]) and not _sha256_ok(digest, "cd" * 32)
