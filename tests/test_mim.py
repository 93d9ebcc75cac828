"""MIM against an OpenSTL-style implementation: converted weights give its frames (test time and
training with a teacher-forcing mask), the published size, rolling horizons, per-sequence
state, gradients and config errors."""

import pytest
import torch

import framecast
import framecast.models.mim  # noqa: F401  (registers the model)
from framecast.errors import ConfigError, FramecastError, InputError
from framecast.models.mim import MIM
from tests.reference.mim_openstl import MIM_Model, reshape_patch
from tests.reference.predrnn_official import OfficialRNN

P, H, NC, NF = 4, 16, 3, 3  # patch, frame size, context, future (small for speed)


def openstl_net(layer_norm: bool) -> MIM_Model:
    torch.manual_seed(0)
    net = MIM_Model([8, 8, 8], P * P, H // P, H // P, 3, layer_norm).eval()
    with torch.no_grad():  # peepholes start at zero and layer norm at identity: perturb them so they matter
        for name, prm in net.named_parameters():
            if prm.dim() == 3 or ".1." in name:
                prm.add_(0.3 * torch.randn_like(prm))
    return net


def to_openstl(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> OpenSTL's patched (B, T, H/p, W/p, p*p*C)."""
    return reshape_patch(frames.permute(0, 1, 3, 4, 2), P)


def converted(ref: MIM_Model) -> MIM:
    cfg, sd, notes = MIM.from_openstl(ref.state_dict())
    assert cfg == {
        "channels": 1,
        "image_size": H,
        "num_hidden": (8, 8, 8),
        "filter_size": 3,
        "patch_size": P,
        "layer_norm": cfg["layer_norm"],
    }
    assert "dropped stlstm_layer_diff.*.conv_last (built by OpenSTL, never used in its forward pass)" in notes
    assert not any(".conv_last." in k and "diff" in k for k in sd)
    model = framecast.create_model("mim", **cfg)
    model.load_state_dict(sd)  # strict: every other name is OpenSTL's
    return model


@pytest.mark.parametrize("layer_norm", [False, True])
def test_converted_openstl_weights_give_openstl_frames(layer_norm):
    ref = openstl_net(layer_norm)
    model = converted(ref).eval()
    assert model.config.layer_norm == layer_norm

    torch.manual_seed(1)
    clip = torch.rand(2, NC + NF, 1, H, H)  # (B, T, C, H, W)
    frames_off = to_openstl(clip)
    # test time: OpenSTL's scheduled-sampling layout, future steps from predictions (mask 0)
    test_mask = torch.zeros(2, NF - 1, H // P, H // P, P * P)
    with torch.no_grad():
        ref_frames = ref(frames_off, test_mask, NC, NF, False)
        ours = model(clip[:, :NC], NF).frames  # (B, T-1, C, H, W)
        ref_again = ref(frames_off, test_mask, NC, NF, False)
        ours_again = model(clip[:, :NC], NF).frames
    assert ours.shape == (2, NC + NF - 1, 1, H, H)
    torch.testing.assert_close(to_openstl(ours), ref_frames, atol=1e-5, rtol=1e-5)
    # OpenSTL's MIM-S cell stays on the module, so its second run of the same clip differs;
    # framecast starts every sequence afresh
    assert (ref_again - ref_frames).abs().max() > 1e-4
    torch.testing.assert_close(ours_again, ours, atol=0, rtol=0)

    # training with a random 0/1 teacher-forcing mask at every input step 1..T-2 (OpenSTL's
    # reverse-scheduled-sampling layout reads the mask at exactly those steps)
    ref.reset()
    ref.train()
    model.train()
    g = torch.Generator().manual_seed(2)
    m = torch.bernoulli(torch.full((2, NC + NF - 2), 0.5), generator=g)
    assert 0 < m.sum() < m.numel()
    mask_off = m[:, :, None, None, None].expand(-1, -1, H // P, H // P, P * P)
    with torch.no_grad():
        ref_frames = ref(frames_off, mask_off, NC, NF, True)
        out = model(clip[:, :NC], NF, future=clip[:, NC:], mask=m)
    torch.testing.assert_close(to_openstl(out.frames), ref_frames, atol=1e-5, rtol=1e-5)
    assert out.losses == {}  # MIM has no training term of its own


def test_wrong_weights_are_refused():
    with pytest.raises(FramecastError, match="not OpenSTL's MIM"):
        MIM.from_openstl(OfficialRNN([8, 8], P * P, H // P, 3, False, False).state_dict())
    state = openstl_net(False).state_dict()
    with pytest.raises(FramecastError, match="output channels"):
        MIM.from_openstl(state, channels=3)


def test_published_size_and_parameter_count():
    model = framecast.create_model("mim")
    cfg = model.config
    assert (cfg.num_hidden, cfg.filter_size, cfg.patch_size, cfg.layer_norm) == ((128,) * 4, 5, 4, False)
    ref = MIM_Model([128] * 4, 16, 16, 16, 5, False)  # built only, no forward
    n_ref = sum(p.numel() for p in ref.parameters())
    unused = sum(
        p.numel() for n, p in ref.named_parameters() if n.startswith("stlstm_layer_diff.") and "conv_last" in n
    )
    assert unused == 3 * 2 * 128 * 128
    assert sum(p.numel() for p in model.parameters()) == n_ref - unused == 37_945_344
    assert abs(n_ref / 1e6 - 38.0) < 0.05  # OpenSTL's table: 38.0 M


def test_longer_horizons_roll_on_and_streaming_steps_agree():
    torch.manual_seed(0)
    model = framecast.create_model("mim", size="test", image_size=H).eval()
    context = torch.rand(2, NC, 1, H, H)
    with torch.no_grad():
        short = model(context, 2).frames
        long = model(context, 9).frames
    assert short.shape == (2, NC + 1, 1, H, H) and long.shape == (2, NC + 8, 1, H, H)
    torch.testing.assert_close(long[:, : short.shape[1]], short, atol=0, rtol=0)

    state, frames = None, []  # frame_step: read the context, then feed back the prediction
    with torch.no_grad():
        for t in range(NC + 1):
            frame, state = model.frame_step(context[:, t] if t < NC else frames[-1], state)
            frames.append(frame)
    torch.testing.assert_close(torch.stack(frames, dim=1), short, atol=1e-6, rtol=1e-5)


def test_test_size_gradients_and_forecast_shapes():
    torch.manual_seed(0)
    model = framecast.create_model("mim", size="test")
    assert model.uses_mask and model.streams and model.fixed_size and not model.bounded_output
    out = framecast.forecast(model, torch.rand(2, 4, 1, 64, 64), 3)
    assert out.shape == (2, 3, 1, 64, 64)
    model.train()
    clip = torch.rand(2, 7, 1, 64, 64)
    pred = model(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5))
    assert pred.frames.shape == (2, 6, 1, 64, 64)
    loss = (pred.frames - clip[:, 1:]).pow(2).mean() + sum(pred.losses.values())
    loss.backward()
    for name, prm in model.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert model.stlstm_layer_diff[0].conv_x_concat[0].weight.grad.abs().sum() > 0


def test_gradient_flows_through_the_mims_cell_across_steps():
    """OpenSTL detaches the MIM-S cell between steps; framecast keeps its gradient."""
    torch.manual_seed(0)
    model = framecast.create_model("mim", size="test", image_size=H)
    x = torch.rand(2, 2, P * P, H // P, H // P)  # two patched frames
    _, state = model.step(x[:, 0], None)
    s0 = state.s[0].detach().requires_grad_()
    y, _ = model.step(x[:, 1], state._replace(s=[s0]))
    (grad,) = torch.autograd.grad(y.pow(2).sum(), s0)
    assert grad.abs().sum() > 0


def test_channels_last_gives_the_same_frames():
    torch.manual_seed(0)
    model = framecast.create_model("mim", size="test", image_size=H).eval()
    x = torch.rand(2, NC, 1, H, H)
    with torch.no_grad():
        ref = model(x, NF).frames
        model.to(memory_format=torch.channels_last)
        assert model.memory_format == torch.channels_last
        torch.testing.assert_close(model(x, NF).frames, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_hidden": (8,)}, "at least 2 positive widths"),
        ({"num_hidden": (8, 0)}, "at least 2 positive widths"),
        ({"num_hidden": (8, 16)}, "share one width"),
        ({"filter_size": 4}, "filter_size must be odd"),
        ({"stride": 2}, "stride must be 1"),
        ({"patch_size": 3}, "patch_size 3 does not divide image_size 64"),
    ],
)
def test_bad_config_values_raise_config_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        framecast.create_model("mim", size="test", **overrides)


def test_frames_of_another_size_raise_input_error():
    model = framecast.create_model("mim", size="test", image_size=H)
    with pytest.raises(InputError, match="expects 16x16"):
        model(torch.rand(1, NC, 1, 32, 32), 1)
