"""PhyDNet against an OpenSTL-style implementation (converted weights, frames, teacher forcing,
moment loss), its published size, longer horizons, streaming and config errors."""

import pytest
import torch
import torch.nn.functional as F

import framecast
import framecast.models.phydnet  # noqa: F401  (registers phydnet)
from framecast.errors import ConfigError, FramecastError
from framecast.models.phydnet import PhyDNet, moment_matrix, moment_term
from tests.reference.phydnet_openstl import PhyDNet_Model, get_constraints

NC, NF, H = 3, 3, 16  # context, future, frame size (small for speed)
T = NC + NF


def openstl_net() -> PhyDNet_Model:
    """Two ConvLSTM layers of different widths; the 7 x 7 PhyCell of OpenSTL (49 filters)."""
    torch.manual_seed(0)
    net = PhyDNet_Model(NC, NF, nf=16, hidden_dims=(8, 16))
    with torch.no_grad():  # group norms start at identity; perturb every weight so each one matters
        for prm in net.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    return net


def converted(net: PhyDNet_Model) -> tuple[PhyDNet, list[str]]:
    cfg, state, notes = PhyDNet.from_openstl(net.state_dict())
    model = framecast.create_model("phydnet", **cfg, image_size=H)
    model.load_state_dict(state)  # strict
    return model, notes


def test_converted_openstl_weights_give_openstl_frames_and_losses():
    ref = openstl_net()
    model, notes = converted(ref)
    cfg = model.config
    assert (cfg.nf, cfg.hidden_dim, cfg.phycell_hidden, cfg.phycell_kernel) == (16, 32, (49,), 7)
    assert (cfg.convlstm_hidden, cfg.convlstm_kernel, cfg.patch_size) == ((8, 16), 3, 4)
    assert any("dropped phycell.*" in n for n in notes) and any("dropped convcell.*" in n for n in notes)
    assert any("k2m" in n for n in notes)
    constraints = get_constraints()

    torch.manual_seed(1)
    clip = torch.rand(2, T, 1, H, H)
    ctx, fut = clip[:, :NC], clip[:, NC:]
    # test time: true context, then the model's own predictions
    ref.eval()
    model.eval()
    ref_pred, ref_loss = ref.inference(ctx, fut, constraints)
    with torch.no_grad():
        out = model(ctx, NF)
    assert out.frames.shape == (2, T - 1, 1, H, H) and out.losses == {}
    torch.testing.assert_close(out.future(NF), ref_pred, atol=1e-5, rtol=1e-5)
    frame_sum = F.mse_loss(out.frames, clip[:, 1:]) * (T - 1)  # OpenSTL sums the T-1 frame MSEs
    with torch.no_grad():
        moment = moment_term(model.phycell.cell_list[0].F.conv1.weight)
    torch.testing.assert_close(frame_sum + moment, ref_loss, atol=1e-5, rtol=1e-5)

    # training: a random 0/1 teacher-forcing mask over input steps 1..T-2, the moment loss, gradients
    ref.train()
    model.train()
    g = torch.Generator().manual_seed(2)
    mask = torch.bernoulli(torch.full((2, T - 2), 0.5), generator=g)
    assert 0 < mask.sum() < mask.numel()
    ref_total, ref_frames, ref_moment = ref(ctx, fut, constraints, mask=mask)
    out = model(ctx, NF, future=fut, mask=mask)
    torch.testing.assert_close(out.frames, ref_frames, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.losses["moment"] * (T - 1), ref_moment, atol=1e-6, rtol=1e-5)
    total = (F.mse_loss(out.frames, clip[:, 1:]) + out.losses["moment"]) * (T - 1)
    torch.testing.assert_close(total, ref_total, atol=1e-5, rtol=1e-5)
    ref_total.backward()
    total.backward()
    for ours, theirs in (
        (model.phycell.cell_list[0].F.conv1.weight, ref.encoder.phycell.cell_list[0].F.conv1.weight),
        (model.convcell.cell_list[1].conv.weight, ref.encoder.convcell.cell_list[1].conv.weight),
        (model.encoder_E.c1.main[0].weight, ref.encoder.encoder_E.c1.main[0].weight),
    ):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_openstl_batch_coin_is_a_mask(teacher_forcing):
    """OpenSTL's policy (true context; one coin per batch feeds every future input the true or the
    predicted frame) is the mask: context entries 1, future entries all 1 or all 0."""
    ref = openstl_net().train()
    model, _ = converted(ref)
    model.train()
    torch.manual_seed(3)
    clip = torch.rand(2, T, 1, H, H)
    mask = torch.ones(2, T - 2)
    if not teacher_forcing:
        mask[:, NC - 1 :] = 0
    with torch.no_grad():  # ratio 1 always draws teacher forcing, ratio 0 never
        _, ref_frames, _ = ref(clip[:, :NC], clip[:, NC:], get_constraints(), float(teacher_forcing))
        ours = model(clip[:, :NC], NF, future=clip[:, NC:], mask=mask).frames
    torch.testing.assert_close(ours, ref_frames, atol=1e-5, rtol=1e-5)


def test_published_size_parameters_and_conversion():
    ours = framecast.create_model("phydnet")
    ref = PhyDNet_Model(10, 10)  # OpenSTL's Moving MNIST widths; build only
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())  # shared modules counted once; none unused
    assert n_ours == n_ref == 3_091_732
    assert abs(n_ours - 3.1e6) < 0.02e6  # OpenSTL's table: 3.1 M
    # OpenSTL's state dict holds the PhyCell and the ConvLSTM twice, plus the k2m buffers
    state = ref.state_dict()
    cell_numel = sum(p.numel() for p in ref.phycell.parameters()) + sum(p.numel() for p in ref.convcell.parameters())
    assert sum(v.numel() for k, v in state.items() if not k.startswith("k2m.")) == n_ref + cell_numel
    cfg, renamed, _ = PhyDNet.from_openstl(state)
    assert framecast.create_model("phydnet", **cfg).config == ours.config  # the defaults are OpenSTL's size
    assert sum(v.numel() for v in renamed.values()) == n_ours
    ours.load_state_dict(renamed)


def test_wrong_weights_raise():
    with pytest.raises(FramecastError, match="not OpenSTL's PhyDNet"):
        PhyDNet.from_openstl({"cell_list.0.conv_x.0.weight": torch.zeros(4, 4, 3, 3)})
    state = openstl_net().state_dict()
    state["phycell.cell_list.0.convgate.bias"] = state["phycell.cell_list.0.convgate.bias"] + 1
    with pytest.raises(FramecastError, match="not a copy of encoder.phycell"):
        PhyDNet.from_openstl(state)
    # the authors' EncoderRNN state dict has no duplicates and no encoder. prefix
    ref = openstl_net()
    model, _ = converted(ref)
    cfg, renamed, notes = PhyDNet.from_openstl(ref.encoder.state_dict())
    assert renamed.keys() == model.state_dict().keys() and not any("dropped" in n for n in notes)


def test_longer_horizons_and_streaming_continue_the_short_prediction():
    torch.manual_seed(0)
    model = framecast.create_model("phydnet", size="test", image_size=H).eval()
    ctx = torch.rand(2, NC, 1, H, H)
    with torch.no_grad():
        short = model(ctx, NF).frames  # (B, NC + NF - 1, C, H, W)
        long = model(ctx, 3 * NF).frames
        assert long.shape == (2, NC + 3 * NF - 1, 1, H, H)
        torch.testing.assert_close(long[:, : short.shape[1]], short, rtol=0, atol=0)
        state = None
        for t in range(NC):  # frame by frame: the same recurrent state as the rollout
            nxt, state = model.frame_step(ctx[:, t], state)
        streamed = [nxt]
        for _ in range(3 * NF - 1):
            nxt, state = model.frame_step(nxt, state)
            streamed.append(nxt)
    torch.testing.assert_close(torch.stack(streamed, dim=1), long[:, NC - 1 :], atol=1e-6, rtol=1e-5)


def test_test_size_forecasts_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = framecast.create_model("phydnet", size="test")
    assert framecast.forecast(model, torch.rand(2, 4, 1, 64, 64), 3).shape == (2, 3, 1, 64, 64)
    model.train()
    clip = torch.rand(2, 7, 1, 64, 64)
    out = model(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5))
    assert out.frames.shape == (2, 6, 1, 64, 64) and set(out.losses) == {"moment"}
    ((out.frames - clip[:, 1:]).pow(2).mean() + sum(out.losses.values())).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    off = framecast.create_model("phydnet", size="test", moment_weight=0.0).train()
    assert off(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5)).losses == {}


def test_channels_last_gives_the_same_frames():
    torch.manual_seed(0)
    model = framecast.create_model("phydnet", size="test", image_size=32).eval()
    x = torch.rand(2, 4, 1, 32, 32)
    ref = framecast.forecast(model, x, 3)
    model.to(memory_format=torch.channels_last)
    assert model.memory_format == torch.channels_last
    torch.testing.assert_close(framecast.forecast(model, x, 3), ref, atol=1e-5, rtol=1e-4)


def test_moment_term_is_zero_for_finite_differences_and_known_for_zeros():
    k = 3
    m_inv = torch.linalg.inv(moment_matrix(k))
    # filter n = k i + j with moment matrix e_i e_j^T is M^-1 e_i e_j^T M^-T, for both input channels
    stencils = torch.stack([m_inv[:, i, None] * m_inv[:, j][None] for i in range(k) for j in range(k)])
    weight = stencils[:, None].expand(-1, 2, -1, -1).float()  # (k^2, 2, k, k)
    assert moment_term(weight).item() == pytest.approx(0.0, abs=1e-10)
    # the central first difference along x is (-1/2, 0, 1/2): filter (0, 1) of the stencils
    torch.testing.assert_close(weight[1, 0, 1], torch.tensor([-0.5, 0.0, 0.5]))
    # zero filters miss each indicator: mean of k^2 ones over k^2 * k^2 entries, per input channel
    assert moment_term(torch.zeros(k * k, 2, k, k)).item() == pytest.approx(2 / k**2)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"patch_size": 8}, "patch_size must be 2 or 4"),
        ({"patch_size": 3}, "patch_size 3 does not divide"),
        ({"nf": 24}, "nf must be a multiple of 16"),
        ({"hidden_dim": 8}, "hidden_dim must be a multiple of 16"),
        ({"convlstm_hidden": (128, 60)}, "last convlstm_hidden width"),
        ({"convlstm_hidden": ()}, "must list positive widths"),
        ({"phycell_kernel": 6}, "must be odd"),
        ({"phycell_hidden": (50,)}, "multiples of phycell_kernel 7"),
        ({"phycell_hidden": (14,)}, "phycell_kernel\\^2 = 49"),
        ({"moment_weight": -1.0}, "moment_weight must be >= 0"),
    ],
)
def test_bad_config_values_raise_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        framecast.create_model("phydnet", **override)


def test_moment_loss_off_frees_the_filter_count():
    model = framecast.create_model("phydnet", size="test", phycell_hidden=(6,), moment_weight=0.0)
    assert model.phycell.cell_list[0].F.conv1.out_channels == 6
