"""The diffusion UNet: shapes for every channel count and size, conditioning, validation, bf16, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genloop.errors import ConfigError
from genloop.models.unet import UNet, group_count
from genloop.schedulers import NoiseScheduleConfig, make_scheduler


def tiny(channels: int, size: int, **kw) -> UNet:
    return UNet(channels, size, width=8, **kw)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_output_has_the_input_shape(channels, size):
    torch.manual_seed(0)
    model = tiny(channels, size, attention_resolutions=(8,))
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # the zero-initialised last conv


def test_out_channels_and_float_timesteps():
    model = UNet(3, 16, width=8, out_channels=6, channel_mults=(1, 2), num_res_blocks=2)
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([10.5, 500.0]))
    assert out.shape == (2, 6, 16, 16)


def randomise_output_layer(model: UNet) -> None:
    """Give the zero-initialised last conv weights, so that outputs depend on the inputs."""
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)


def test_timestep_and_class_change_the_output():
    torch.manual_seed(0)
    model = tiny(1, 8, num_classes=10)
    randomise_output_layer(model)
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([5, 5, 5])
    a = model(x, t, torch.tensor([0, 1, 2]))
    assert not torch.allclose(a, model(x, torch.tensor([6, 6, 6]), torch.tensor([0, 1, 2])))
    assert not torch.allclose(a, model(x, t, torch.tensor([3, 1, 2])))
    # No labels on a conditional model means the null ("unconditional") label, index num_classes.
    null = torch.full((3,), model.null_label)
    assert model.null_label == 10
    assert torch.equal(model(x, t), model(x, t, null))
    assert not torch.allclose(model(x, t), a)
    # Rows are independent: one image's output does not depend on its batch neighbours.
    assert torch.allclose(model(x[:1], t[:1], torch.tensor([0])), a[:1], atol=1e-5)


def test_unconditional_model_rejects_labels():
    model = tiny(1, 8)
    assert model.class_emb is None
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 8, 8), torch.tensor([1]), torch.tensor([0]))


@pytest.mark.parametrize(
    "size, mults",
    [(10, (1, 2, 2)), (4, (1,)), (128, (1, 2, 2)), (16, (1, 2, 2, 2, 2, 2))],
)
def test_bad_image_size_is_a_one_line_config_error(size, mults):
    with pytest.raises(ConfigError, match=f"got {size}$") as err:
        UNet(1, size, width=8, channel_mults=mults)
    assert "\n" not in str(err.value)


def test_group_count_divides_channels():
    for channels in (1, 3, 8, 12, 24, 32, 48, 64, 96, 128, 256):
        g = group_count(channels)
        assert channels % g == 0 and 1 <= g <= 32
    assert group_count(128) == 32 and group_count(8) == 2


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = tiny(3, 16, num_classes=2, attention_resolutions=(16, 8))
    randomise_output_layer(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([3, 700]), torch.tensor([0, 1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_overfits_one_batch():
    """UNet + DDPM loss on one fixed batch: if the wiring is broken, the loss stays near 1."""
    torch.manual_seed(0)
    scheduler = make_scheduler("ddpm", NoiseScheduleConfig())
    # Eight smooth 8x8 "images" in [-1, 1], upsampled from 4x4 random patterns.
    x0 = F.interpolate(torch.rand(8, 1, 4, 4) * 2 - 1, size=8, mode="bilinear", align_corners=False)
    noise = torch.randn_like(x0)
    t = torch.linspace(0, 999, 8).long()
    x_t = scheduler.add_noise(x0, noise, t)
    target = scheduler.training_target(x0, noise, t)
    model = UNet(1, 8, width=16, channel_mults=(1, 2), attention_resolutions=(4,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(model(x_t, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.5  # zero output at init: the loss is the target's variance
    assert losses[-1] < losses[0] / 100, (losses[0], losses[-1])
