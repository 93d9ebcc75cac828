"""PredRNN and PredRNN-V2 against an official-style implementation, converted weights,
the decoupling loss and the reverse scheduled sampling policy."""

import pytest
import torch

import framecast
from framecast.cli import main
from framecast.errors import FramecastError
from framecast.models.predrnn import decoupling_similarity
from tests.reference.predrnn_official import OfficialRNN, reshape_patch

P, H, NC, NF = 4, 16, 3, 3  # patch, frame size, context, future (small for speed)


def official_net(v2: bool, layer_norm: bool) -> OfficialRNN:
    torch.manual_seed(0)
    net = OfficialRNN([8, 8, 8], P * P, H // P, 3, layer_norm, v2).eval()
    with torch.no_grad():  # layer norm starts at identity; perturb it so it matters
        for name, prm in net.named_parameters():
            if ".1." in name:
                prm.add_(0.1 * torch.randn_like(prm))
    return net


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_converted_official_weights_give_official_frames(v2, layer_norm, tmp_path):
    ref = official_net(v2, layer_norm)
    src = tmp_path / "model.ckpt-80000"
    torch.save({"net_param": ref.state_dict()}, src)
    name = "predrnn_v2" if v2 else "predrnn"
    out = tmp_path / "converted.ckpt"
    args = ["convert", str(src), "--from", "official", "--model", name, "--out", str(out)]
    if not layer_norm:
        args += ["--set", f"image_size={H}"]
    assert main(args) == 0
    model = framecast.load_checkpoint(out)
    assert model.config.layer_norm == layer_norm and model.config.num_hidden == (8, 8, 8)

    torch.manual_seed(1)
    clip = torch.rand(2, NC + NF, 1, H, H)  # (B, T, C, H, W)
    frames_off = reshape_patch(clip.permute(0, 1, 3, 4, 2), P)  # (B, T, H/p, W/p, p*p)
    # test time: context true, future from predictions
    if v2:  # reverse scheduled sampling layout: T-2 entries, context ones, future zeros
        mask = torch.zeros(2, NC + NF - 2, H // P, H // P, P * P)
        mask[:, : NC - 1] = 1
    else:
        mask = torch.zeros(2, NF - 1, H // P, H // P, P * P)
    with torch.no_grad():
        ref_frames, _ = ref(frames_off, mask, NC, NC + NF, v2)
        ours = model(clip[:, :NC], NF).frames  # (B, T-1, C, H, W)
    ours_off = reshape_patch(ours.permute(0, 1, 3, 4, 2), P)
    torch.testing.assert_close(ours_off, ref_frames, atol=1e-5, rtol=1e-5)

    # training with a random teacher-forcing mask, and the decoupling loss
    model.train()
    ref.train()
    g = torch.Generator().manual_seed(2)
    m = torch.bernoulli(torch.full((2, NC + NF - 2), 0.5), generator=g)
    mask_off = m[:, :, None, None, None].expand(-1, -1, H // P, H // P, P * P)
    with torch.no_grad():
        ref_frames, ref_dec = ref(frames_off, mask_off, NC, NC + NF, True)
        out_ours = model(clip[:, :NC], NF, future=clip[:, NC:], mask=m)
    torch.testing.assert_close(
        reshape_patch(out_ours.frames.permute(0, 1, 3, 4, 2), P), ref_frames, atol=1e-5, rtol=1e-5
    )
    if v2:
        torch.testing.assert_close(out_ours.losses["decouple"], 0.1 * ref_dec, atol=1e-6, rtol=1e-5)
    else:
        assert out_ours.losses == {}


def test_openstl_prefixes_and_wrong_model(tmp_path):
    ref = official_net(True, False)
    src = tmp_path / "openstl.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, src)
    out = tmp_path / "c.ckpt"
    assert (
        main(
            [
                "convert",
                str(src),
                "--from",
                "openstl",
                "--model",
                "predrnn_v2",
                "--set",
                f"image_size={H}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert framecast.load_checkpoint(out).model_name == "predrnn_v2"
    from framecast.convert import convert

    with pytest.raises(FramecastError, match="PredRNN-V2"):
        convert(src, "openstl", "predrnn", tmp_path / "x.ckpt", {"image_size": H})
    with pytest.raises(FramecastError, match="net_param"):
        convert(src, "official", "predrnn_v2", tmp_path / "x.ckpt")


def test_decoupling_loss_identical_orthogonal_and_gradients():
    adapter = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(2)[:, :, None, None])
    a = torch.rand(3, 2, 4, 4) + 0.1
    assert decoupling_similarity(a, a, adapter).item() == pytest.approx(1.0, abs=1e-6)
    x = torch.zeros(1, 2, 4, 4)
    y = torch.zeros(1, 2, 4, 4)
    x[..., :2, :] = 1  # top half
    y[..., 2:, :] = 1  # bottom half: orthogonal over pixels
    assert decoupling_similarity(x, y, adapter).item() == pytest.approx(0.0, abs=1e-7)

    torch.manual_seed(0)
    model = framecast.create_model("predrnn_v2", num_hidden=(4, 4), filter_size=3, image_size=16).train()
    clip = torch.rand(2, 5, 1, 16, 16)
    out = model(clip[:, :3], 2, future=clip[:, 3:], mask=torch.ones(2, 3))
    out.losses["decouple"].backward()
    assert model.adapter.weight.grad.abs().sum() > 0
    assert model.cell_list[0].conv_x[0].weight.grad.abs().sum() > 0


def test_official_sizes_and_defaults():
    v1 = framecast.create_model("predrnn")
    v2 = framecast.create_model("predrnn_v2")
    assert v1.config.num_hidden == (128,) * 4 and v1.config.filter_size == 5 and v1.config.patch_size == 4
    assert v2.config.decouple_beta == 0.1
    assert sum(p.numel() for p in v2.parameters()) - sum(p.numel() for p in v1.parameters()) == 128 * 128
    with pytest.raises(ValueError, match="share one width"):
        framecast.create_model("predrnn", num_hidden=(64, 32))


def test_checkpointed_cells_give_the_same_loss_and_gradients():
    torch.manual_seed(0)
    kw = dict(num_hidden=(8, 8), filter_size=3, image_size=16, patch_size=4)
    plain = framecast.create_model("predrnn_v2", **kw).train()
    lean = framecast.create_model("predrnn_v2", **kw, checkpoint_cells=True).train()
    lean.load_state_dict(plain.state_dict())
    clip = torch.rand(2, 6, 1, 16, 16)
    grads = []
    for model in (plain, lean):
        out = model(clip[:, :3], 3, future=clip[:, 3:], mask=torch.ones(2, 4))
        loss = torch.nn.functional.mse_loss(out.frames, clip[:, 1:]) + out.losses["decouple"]
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
