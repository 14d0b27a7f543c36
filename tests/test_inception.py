"""FID Inception-v3 backend: key names and shapes of the standard weights file, loading, preprocessing, errors.

The real weights (~91 MB) are not available offline, so the net is randomly initialised, saved in both
supported formats and loaded back. One forward pass at 299 px costs ~6 GFLOPs, so only a few images run.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from genloop.errors import DataError, NotFoundError
from genloop.evaluation.inception import (
    FID_WEIGHTS_NAME,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    _avg_pool_same,
    expected_keys,
    load_inception,
)
from genloop.serialization import sha256_file


def _randomised_net() -> FIDInceptionV3:
    """Random weights *and* BatchNorm statistics, scaled so activations stay O(1) through 94 layers.

    (PyTorch's default init shrinks them to ~1e-8 by pool3, which would make every comparison vacuous.)
    """
    g = torch.Generator().manual_seed(0)
    net = FIDInceptionV3()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(c, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The same random weights as .pth (plain dict of tensors, like the real file) and as .safetensors."""
    d = tmp_path_factory.mktemp("inception")
    state = {k: v for k, v in _randomised_net().state_dict().items() if not k.endswith("num_batches_tracked")}
    pth, st = d / "fid.pth", d / "fid.safetensors"
    torch.save(dict(state), pth)
    save_file(state, str(st))
    return {"pth": pth, "safetensors": st, "state": state}


@pytest.fixture(scope="module")
def fresh_net() -> FIDInceptionV3:
    return FIDInceptionV3()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two small RGB images in [-1, 1]; the second is grey (equal channels). Resized to 299 inside."""
    g = torch.Generator().manual_seed(1)
    colour = torch.rand(1, 3, 12, 12, generator=g) * 2 - 1
    grey = (torch.rand(1, 1, 12, 12, generator=g) * 2 - 1).expand(-1, 3, -1, -1)
    return torch.cat([colour, grey])


def test_key_names_and_shapes_match_the_fid_weights_file(fresh_net):
    net = fresh_net
    keys = expected_keys(net)
    # 94 conv layers x (conv.weight + bn weight/bias/running_mean/running_var) + fc.weight + fc.bias
    assert len(keys) == 94 * 5 + 2 == 472
    assert (
        sum(p.numel() for p in net.parameters()) == 23_850_960
    )  # torchvision's 27,161,264 less AuxLogits, 1008 classes
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.bn.bias": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }.items():
        assert shapes[key] == shape, key
    assert not any("AuxLogits" in k for k in keys)


def test_fid_pooling_quirks(fresh_net):
    # TensorFlow's average pool ignores the zero padding: a constant image stays constant at the borders
    torch.testing.assert_close(_avg_pool_same(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))
    net = fresh_net
    x = -torch.ones(1, 2048, 3, 3)
    x[..., 0, 0] = 1.0
    assert float(net.Mixed_7c.pool(x)[0, 0, 1, 1]) == 1.0  # max pool in the last block
    assert float(net.Mixed_7b.pool(x)[0, 0, 1, 1]) < 0.0  # average pool in the one before


def test_loads_both_formats_and_gives_deterministic_2048_d_features(weights, images):
    ext = load_inception(weights["pth"])
    assert isinstance(ext, InceptionFeatureExtractor)
    assert ext.kind == "inception" and math.isnan(ext.accuracy)
    assert ext.feature_dim == 2048 and ext.num_classes == 1008
    assert ext.channels is None and ext.image_size is None
    assert ext.sha256 == sha256_file(weights["pth"]) and ext.id == f"inception-v3-fid:{ext.sha256[:12]}"
    for k, v in weights["state"].items():  # every tensor arrived
        torch.testing.assert_close(ext.net.state_dict()[k], v, rtol=0, atol=0)

    feats, probs = ext.features_and_probs(images)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    assert feats.dtype == probs.dtype == torch.float64
    assert torch.isfinite(feats).all() and feats.std() > 1e-3  # non-degenerate activations
    torch.testing.assert_close(probs.sum(1), torch.ones(2, dtype=torch.float64))

    st = load_inception(weights["safetensors"])
    torch.testing.assert_close(st.features(images), feats)  # same weights, same features, run to run


def test_grey_and_rgba_inputs_match_their_rgb_equivalents(weights, images):
    ext = load_inception(weights["safetensors"])
    rgb = ext.features(images[1:])
    grey = ext.features(images[1:, :1])  # (1, 1, H, W)
    rgba = ext.features(torch.cat([images[1:], torch.ones(1, 1, 12, 12)], dim=1))
    torch.testing.assert_close(grey, rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rgba, rgb, rtol=1e-5, atol=1e-6)
    uint8 = ((images[1:] + 1) * 127.5).round().to(torch.uint8)
    assert ext.features(uint8).shape == (1, 2048)
    with pytest.raises(DataError, match="1 to 4 channels"):
        ext.features(torch.zeros(1, 5, 8, 8))
    with pytest.raises(DataError, match="NaN"):
        ext.features(torch.full((1, 3, 8, 8), float("nan")))


def test_missing_file_says_where_to_get_the_weights(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(NotFoundError) as e:
        load_inception(missing)
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg and FID_WEIGHTS_NAME in msg and "pytorch-fid" in msg


def test_wrong_keys_or_shapes_or_format_raise_one_line_data_errors(tmp_path, weights):
    state = dict(weights["state"])
    renamed = {("model." + k if k.startswith("Mixed_7c") else k): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(DataError) as e:
        load_inception(tmp_path / "renamed.pth")
    n7c = sum(k.startswith("Mixed_7c") for k in state)
    assert f"{n7c} of 472 expected keys missing and {n7c} unexpected" in str(e.value)

    partial = {k: v for k, v in state.items() if k != "fc.bias"}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(DataError, match="1 of 472 expected keys missing and 0 unexpected"):
        load_inception(tmp_path / "partial.safetensors")

    reshaped = {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    torch.save(reshaped, tmp_path / "imagenet1000.pth")
    with pytest.raises(DataError, match="2 tensors have the wrong shape"):
        load_inception(tmp_path / "imagenet1000.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "weights.npz").write_bytes(b"")
    for name, match in (("junk.pth", "not a readable weights file"), ("weights.npz", "unknown weights format")):
        with pytest.raises(DataError, match=match) as e:
            load_inception(tmp_path / name)
        assert "\n" not in str(e.value)

    # a newer torch's re-save adds the BatchNorm counters: accepted
    with_counters = _randomised_net().state_dict()
    assert len(with_counters) == 472 + 94
    torch.save(dict(with_counters), tmp_path / "counters.pth")
    assert load_inception(tmp_path / "counters.pth").feature_dim == 2048
