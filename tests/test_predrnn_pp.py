"""PredRNN++ against an independent OpenSTL-style implementation: converted weights give the
same frames and gradients, the published size, horizons, streaming and config errors."""

import pytest
import torch
import torch.nn.functional as F

import framecast
import framecast.models.predrnn_pp  # noqa: F401  (registers predrnn_pp)
from framecast.errors import ConfigError, FramecastError, InputError
from framecast.models.predrnn_pp import PredRNNpp
from tests.reference.predrnn_pp_openstl import PredRNNppModel, reshape_patch

P, H, NC, NF = 4, 16, 3, 3  # patch, frame size, context, future (small for speed)
WIDTHS = (8, 8, 8)


def reference(layer_norm: bool, reverse: int = 0, ghu_norm_channels: int | None = None) -> PredRNNppModel:
    torch.manual_seed(0)
    net = PredRNNppModel(list(WIDTHS), (NC + NF, 1, H, H), P, 3, NC, NF, layer_norm, reverse, 1, ghu_norm_channels)
    with torch.no_grad():
        for name, prm in net.named_parameters():
            if ".1." in name:  # layer norm starts at identity; perturb it so it matters
                prm.add_(0.1 * torch.randn_like(prm))
            elif name.startswith("gradient_highway."):  # U(-0.001, 0.001): make the highway matter
                prm.normal_(0, 0.1)
    return net.eval()


def converted(ref: PredRNNppModel) -> tuple[PredRNNpp, dict, list[str]]:
    cfg, sd, notes = PredRNNpp.from_openstl(ref.state_dict())
    model = framecast.create_model("predrnn_pp", **{"image_size": H, **cfg})
    model.load_state_dict(sd)  # strict: every name matches, nothing left over
    return model.eval(), cfg, notes


def off(frames: torch.Tensor) -> torch.Tensor:
    """framecast (B, T, C, H, W) -> OpenSTL's patched (B, T, H/p, W/p, p*p*C)."""
    return reshape_patch(frames.permute(0, 1, 3, 4, 2), P)


def mask_off(m: torch.Tensor) -> torch.Tensor:
    """(B, T') per-step mask -> OpenSTL's (B, T', H/p, W/p, p*p*C)."""
    return m[:, :, None, None, None].expand(-1, -1, H // P, H // P, P * P)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_converted_openstl_weights_give_openstl_frames_and_gradients(layer_norm):
    ref = reference(layer_norm)
    model, cfg, notes = converted(ref)
    assert cfg == {
        "channels": 1,
        "num_hidden": WIDTHS,
        "filter_size": 3,
        "patch_size": P,
        "layer_norm": layer_norm,
        **({"image_size": H} if layer_norm else {}),
    }
    conv_o = sum(v.numel() for k, v in ref.state_dict().items() if ".conv_o." in k)
    assert notes == [f"dropped cell_list.*.conv_o ({conv_o:,} parameters; never used in OpenSTL's forward pass)"]

    torch.manual_seed(1)
    clip = torch.rand(2, NC + NF, 1, H, H)  # (B, T, C, H, W)
    # test time: context true, future from predictions (OpenSTL: an all-zero future mask)
    with torch.no_grad():
        ref_frames, _ = ref(off(clip), torch.zeros(2, NF - 1, H // P, H // P, P * P))
        ours = model(clip[:, :NC], NF).frames  # (B, T-1, C, H, W)
    assert ours.shape == (2, NC + NF - 1, 1, H, H)
    torch.testing.assert_close(off(ours), ref_frames, atol=1e-5, rtol=1e-5)

    # training with a random 0/1 mask over every input step (OpenSTL's reverse indexing) ...
    model.train()
    ref.train()
    ref.reverse_scheduled_sampling = 1
    m = torch.bernoulli(torch.full((2, NC + NF - 2), 0.5), generator=torch.Generator().manual_seed(2))
    assert 0 < m.sum() < m.numel()
    ref_frames, ref_loss = ref(off(clip), mask_off(m))
    out = model(clip[:, :NC], NF, future=clip[:, NC:], mask=m)
    torch.testing.assert_close(off(out.frames), ref_frames, atol=1e-5, rtol=1e-5)
    assert out.losses == {}  # PredRNN++ has no training term of its own
    loss = F.mse_loss(out.frames, clip[:, 1:])
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    loss.backward()
    ref_loss.backward()
    ref_grads = dict(ref.named_parameters())
    for name, prm in model.named_parameters():
        torch.testing.assert_close(prm.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    assert all(p.grad is None for n, p in ref.named_parameters() if ".conv_o." in n)  # truly unused

    # ... and OpenSTL's scheduled sampling: context always true, a mask over the future steps
    ref.reverse_scheduled_sampling = 0
    with torch.no_grad():
        ref_frames, _ = ref(off(clip), mask_off(m[:, NC - 1 :]))
        ours = model(clip[:, :NC], NF, future=clip[:, NC:], mask=torch.cat([torch.ones(2, NC - 1), m[:, NC - 1 :]], 1))
    torch.testing.assert_close(off(ours.frames), ref_frames, atol=1e-5, rtol=1e-5)


def test_published_size_counts_openstl_parameters_without_conv_o():
    model = framecast.create_model("predrnn_pp")
    c = model.config
    assert (c.num_hidden, c.filter_size, c.patch_size, c.layer_norm) == ((128,) * 4, 5, 4, False)
    ref = PredRNNppModel([128] * 4, (20, 1, 64, 64), 4, 5, 10, 10)
    ref_count = sum(p.numel() for p in ref.parameters())
    conv_o = sum(p.numel() for n, p in ref.named_parameters() if ".conv_o." in n)
    ours = sum(p.numel() for p in model.parameters())
    assert conv_o == 4 * 256 * 128 * 25
    assert ours == ref_count - conv_o == 35_307_520
    assert abs(ref_count - 38.6e6) < 0.05e6  # OpenSTL's table: 38.6 M


def test_longer_horizons_streaming_and_channels_last():
    torch.manual_seed(0)
    model = framecast.create_model("predrnn_pp", num_hidden=(8, 8), filter_size=3, image_size=H).eval()
    x = torch.rand(2, 4, 1, H, H)
    with torch.no_grad():
        short = model(x, 3).frames  # (B, 6, C, H, W)
        long = model(x, 9).frames
    assert short.shape == (2, 6, 1, H, H) and long.shape == (2, 12, 1, H, H)
    torch.testing.assert_close(long[:, :6], short)  # the rollout just runs on
    assert framecast.forecast(model, x, 9).shape == (2, 9, 1, H, H)

    # frame by frame: the context, then its own predictions, give the same frames
    state, preds, frame = None, [], None
    with torch.no_grad():
        for t in range(4 + 8):
            frame, state = model.frame_step(x[:, t] if t < 4 else frame, state)
            preds.append(frame)
    torch.testing.assert_close(torch.stack(preds, 1), long, atol=1e-6, rtol=1e-5)

    model.to(memory_format=torch.channels_last)
    assert model.memory_format == torch.channels_last
    with torch.no_grad():
        torch.testing.assert_close(model(x, 9).frames, long, atol=1e-5, rtol=1e-4)


def test_test_size_predicts_and_every_parameter_learns():
    torch.manual_seed(0)
    model = framecast.create_model("predrnn_pp", size="test")
    assert model.uses_mask and model.streams and not model.bounded_output and not model.fixed_size
    ghu = model.gradient_highway
    assert max(ghu.x_concat[0].weight.abs().max(), ghu.z_concat[0].weight.abs().max()) <= 0.001  # OpenSTL's init
    assert framecast.forecast(model, torch.rand(2, 4, 1, 64, 64), 3).shape == (2, 3, 1, 64, 64)
    clip = torch.rand(2, 7, 1, 64, 64)
    out = model(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5))
    assert out.frames.shape == (2, 6, 1, 64, 64)
    ((out.frames - clip[:, 1:]).pow(2).mean() + sum(out.losses.values())).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ConfigError, match=r"at least 2 positive widths .* got \(8,\)"):
        framecast.create_model("predrnn_pp", num_hidden=(8,))
    with pytest.raises(ConfigError, match=r"share one width .* got \(8, 4\); use e.g. \(8, 8\)"):
        framecast.create_model("predrnn_pp", num_hidden=(8, 4))
    with pytest.raises(ConfigError, match="filter_size must be odd and positive, got 4"):
        framecast.create_model("predrnn_pp", filter_size=4)
    with pytest.raises(ConfigError, match="patch_size 5 does not divide image_size 64"):
        framecast.create_model("predrnn_pp", patch_size=5)
    normed = framecast.create_model("predrnn_pp", num_hidden=(4, 4), filter_size=3, layer_norm=True, image_size=H)
    assert normed.fixed_size
    with pytest.raises(InputError, match="expects 16x16"):
        normed(torch.rand(1, 3, 1, 32, 32), 2)


def test_conversion_refuses_other_weights():
    ref = reference(False)
    with pytest.raises(FramecastError, match="not patch\\^2 x 3"):
        PredRNNpp.from_openstl(ref.state_dict(), channels=3)
    no_ghu = {k: v for k, v in ref.state_dict().items() if not k.startswith("gradient_highway.")}
    with pytest.raises(FramecastError, match="not OpenSTL's PredRNN\\+\\+"):
        PredRNNpp.from_openstl(no_ghu)
    predrnn_like = {k: v for k, v in ref.state_dict().items() if ".conv_c2m." not in k}
    with pytest.raises(FramecastError, match="not OpenSTL's PredRNN\\+\\+"):
        PredRNNpp.from_openstl(predrnn_like)

    # OpenSTL's own layer_norm GHU normalises nh channels of a 2 nh output: it cannot run
    literal = reference(True, ghu_norm_channels=WIDTHS[0])
    with pytest.raises(RuntimeError):
        literal(off(torch.rand(1, NC + NF, 1, H, H)), torch.zeros(1, NF - 1, H // P, H // P, P * P))
    with pytest.raises(FramecastError, match="OpenSTL cannot run this layer_norm PredRNN\\+\\+"):
        PredRNNpp.from_openstl(literal.state_dict())
