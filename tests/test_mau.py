"""MAU against an OpenSTL-style implementation with converted weights, its published size,
horizons longer than the clip it was built for, streaming, and its config errors."""

import pytest
import torch

import framecast
import framecast.models.mau  # noqa: F401  (registers "mau")
from framecast.errors import ConfigError, FramecastError
from framecast.models.mau import MAU
from tests.reference.mau_openstl import RefMAU

H, NC, NF = 16, 3, 4  # frame size, context, future (small for speed)


def reference(cell_mode: str, model_mode: str, sr_size: int, tau: int) -> RefMAU:
    torch.manual_seed(0)
    ref = RefMAU([8, 8, 8], 1, H, H, 3, sr_size, tau, cell_mode, model_mode).eval()
    with torch.no_grad():  # layer norms start at identity; perturb them so they matter
        for name, prm in ref.named_parameters():
            if ".1." in name:
                prm.add_(0.1 * torch.randn_like(prm))
    return ref


def converted(ref: RefMAU, **overrides) -> MAU:
    state = {"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}  # as OpenSTL saves it
    plain = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    cfg, sd, notes = MAU.from_openstl(plain)
    assert notes[:2] == [
        "dropped merge.* (built by OpenSTL, never used in its forward pass)",
        "dropped conv_last_sr.* (built by OpenSTL, never used in its forward pass)",
    ]
    assert cfg["num_hidden"] == (8, 8, 8) and cfg["image_size"] == H and cfg["filter_size"] == 3
    model = framecast.create_model("mau", **cfg, **overrides)
    model.load_state_dict(sd)  # strict: every weight matched by name
    return model


@pytest.mark.parametrize(
    ("cell_mode", "model_mode", "sr_size", "tau"),
    [("normal", "normal", 4, 3), ("residual", "recall", 2, 2), ("normal", "recall", 1, 5)],
)
def test_converted_openstl_weights_give_openstl_frames(cell_mode, model_mode, sr_size, tau):
    ref = reference(cell_mode, model_mode, sr_size, tau)
    model = converted(ref, tau=tau, cell_mode=cell_mode, model_mode=model_mode).eval()
    assert model.config.sr_size == sr_size

    torch.manual_seed(1)
    clip = torch.rand(2, NC + NF, 1, H, H)  # (B, T, C, H, W)
    clip_off = clip.permute(0, 1, 3, 4, 2)  # (B, T, H, W, C), as OpenSTL's method hands it in
    with torch.no_grad():  # test time: context true, future from predictions
        ref_frames, _ = ref(clip_off, torch.zeros(2, NF - 1, H, H, 1), NC, NC + NF)
        ours = model(clip[:, :NC], NF).frames  # (B, T-1, C, H, W)
    assert ours.shape == ref_frames.shape == (2, NC + NF - 1, 1, H, H)
    torch.testing.assert_close(ours, ref_frames, atol=1e-5, rtol=1e-5)

    # training, random 0/1 scheduled sampling over the future inputs (OpenSTL's layout); framecast's
    # mask covers steps 1..T-2, so the context steps carry ones
    model.train()
    ref.train()
    g = torch.Generator().manual_seed(2)
    m = torch.bernoulli(torch.full((2, NF - 1), 0.5), generator=g)
    assert 0 < m.sum() < m.numel()
    mask = torch.cat([torch.ones(2, NC - 1), m], dim=1)  # (B, T-2)
    with torch.no_grad():
        ref_frames, ref_loss = ref(clip_off, m[:, :, None, None, None].expand(-1, -1, H, H, 1), NC, NC + NF)
        out = model(clip[:, :NC], NF, future=clip[:, NC:], mask=mask)
    torch.testing.assert_close(out.frames, ref_frames, atol=1e-5, rtol=1e-5)
    assert out.losses == {}  # MAU has no term of its own: OpenSTL's loss is the frame MSE
    torch.testing.assert_close((out.frames - clip[:, 1:]).pow(2).mean(), ref_loss, atol=1e-6, rtol=1e-5)


def test_published_size_parameter_count():
    ref = RefMAU([64] * 4, 1, 64, 64, 5, 4, 5)
    model = framecast.create_model("mau")
    cfg = model.config
    assert (cfg.num_hidden, cfg.filter_size, cfg.patch_size, cfg.sr_size, cfg.tau) == ((64,) * 4, 5, 1, 4, 5)
    count = sum(p.numel() for p in model.parameters())
    ref_count = sum(p.numel() for p in ref.parameters())
    unused = sum(p.numel() for p in [*ref.merge.parameters(), *ref.conv_last_sr.parameters()])
    assert count == ref_count - unused == 4_475_329
    assert abs(ref_count / 1e6 - 4.5) < 0.05  # OpenSTL's table: 4.5 M


def test_from_openstl_rejects_other_weights():
    ref = RefMAU([8], 1, H, H, 3, 1, 2)
    state = ref.state_dict()
    with pytest.raises(FramecastError, match="not OpenSTL's MAU"):
        MAU.from_openstl({"cell_list.0.conv_x.0.weight": torch.zeros(4, 1, 3, 3), "conv_last.weight": torch.zeros(1)})
    with pytest.raises(FramecastError, match="srcnn has 1 output channels, not patch\\^2 x 3"):
        MAU.from_openstl(state, channels=3)


def test_longer_horizons_and_streaming_continue_the_short_prediction():
    torch.manual_seed(0)
    model = framecast.create_model("mau", size="test").eval()
    x = torch.rand(2, 4, 1, 64, 64)
    assert framecast.forecast(model, x, 3).shape == (2, 3, 1, 64, 64)
    with torch.no_grad():
        short = model(x, 3).frames
        long = model(x, 9).frames  # far past tau = 2 and the 3 frames of the test clip
    assert short.shape == (2, 6, 1, 64, 64) and long.shape == (2, 12, 1, 64, 64)
    torch.testing.assert_close(long[:, :6], short)
    # frame by frame with the streamed state: the context, then its own predictions
    state, preds = None, []
    with torch.no_grad():
        for t in range(4 + 9 - 1):
            y, state = model.frame_step(x[:, t] if t < 4 else preds[-1], state)
            preds.append(y)
    torch.testing.assert_close(torch.stack(preds, dim=1), long)


def test_test_size_gets_gradients_and_channels_last_gives_the_same_frames():
    torch.manual_seed(0)
    model = framecast.create_model("mau", size="test")
    clip = torch.rand(2, 7, 1, 64, 64)
    out = model(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5))
    assert out.frames.shape == (2, 6, 1, 64, 64)
    loss = (out.frames - clip[:, 1:]).pow(2).mean() + sum(out.losses.values())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        ref = model(clip[:, :4], 3).frames
        model.to(memory_format=torch.channels_last)
        assert model.memory_format == torch.channels_last
        torch.testing.assert_close(model(clip[:, :4], 3).frames, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_hidden": (64, 32)}, "share one width"),
        ({"num_hidden": ()}, "at least one positive width"),
        ({"filter_size": 4}, "filter_size must be odd"),
        ({"tau": 0}, "tau .* must be >= 1"),
        ({"sr_size": 3}, r"sr_size 3 must be a power of 2 .* sr sizes that fit: \[1, 2, 4, 8, 16, 32, 64\]"),
        ({"sr_size": 8, "patch_size": 16}, r"sr_size 8 .* 4x4 patched frame .* fit: \[1, 2, 4\]"),
        ({"patch_size": 5}, "patch_size 5 does not divide image_size 64"),
        ({"cell_mode": "resid"}, "cell_mode must be one of normal, residual, got 'resid'"),
        ({"model_mode": "recal"}, "model_mode must be one of normal, recall, got 'recal'"),
    ],
)
def test_bad_config_values_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        framecast.create_model("mau", **values)
