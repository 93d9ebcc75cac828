import numpy as np
import pytest
import torch

import framecast
from framecast.errors import ConfigError
from framecast.layers import patchify, unpatchify

MODELS = framecast.list_models()


def small(name: str) -> dict:
    """Overrides that keep every model fast in tests."""
    return {
        "convlstm": {"num_hidden": (8, 8), "filter_size": 3},
        "convlstm_seq2seq": {"hidden": 8, "patch_size": 2},
        "predrnn": {"num_hidden": (8, 8), "filter_size": 3},
        "maxvit": {
            "n_context": 4,
            "n_out": 2,
            "dim": 32,
            "depths": (1,),
            "window_size": 4,
            "grid_size": 4,
            "patch_size": 8,
        },
        "maxvit_rgb": {"n_context": 4, "n_out": 2, "dim": 32, "depths": (1,), "patch_size": 8},
        "predrnn_v2": {"num_hidden": (8, 8), "filter_size": 3},
    }.get(name, {})


@pytest.mark.parametrize("name", MODELS)
def test_every_model_predicts_future_shapes(name):
    torch.manual_seed(0)
    model = framecast.create_model(name, **small(name))
    c = getattr(model.config, "channels", 1)
    context = torch.rand(2, 4, c, 64, 64)
    out = framecast.forecast(model, context, 3)
    assert out.shape == (2, 3, c, 64, 64)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", [n for n in MODELS if framecast.registry.get_entry(n).trainable])
def test_every_trainable_model_gets_gradients(name):
    torch.manual_seed(0)
    model = framecast.create_model(name, **small(name))
    clip = torch.rand(2, 7, getattr(model.config, "channels", 1), 64, 64)
    mask = torch.ones(2, 5) if model.uses_mask else None
    out = model(clip[:, :4], 3, future=clip[:, 4:], mask=mask)
    assert out.frames.shape[1] in (3, 6)
    loss = (out.frames - clip[:, -out.frames.shape[1] :]).pow(2).mean() + sum(out.losses.values())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_channels_last_gives_the_same_frames():
    torch.manual_seed(0)
    model = framecast.create_model("convlstm", num_hidden=(8, 8), filter_size=3)
    x = torch.rand(2, 4, 1, 64, 64)
    ref = framecast.forecast(model, x, 3)
    model.to(memory_format=torch.channels_last)
    assert model.memory_format == torch.channels_last
    torch.testing.assert_close(framecast.forecast(model, x, 3), ref, atol=1e-5, rtol=1e-4)


def test_unfused_gates_are_the_same_cell():
    """fused_gates=False (the reference code's conv_x(x) + conv_h(h)) loads the same weights and
    gives the same frames and gradients as the fused convolution over [x, h]."""
    torch.manual_seed(0)
    fused = framecast.create_model("convlstm", num_hidden=(8, 8), filter_size=3)
    split = framecast.create_model("convlstm", num_hidden=(8, 8), filter_size=3, fused_gates=False)
    split.load_state_dict(fused.state_dict())
    clip = torch.rand(2, 7, 1, 64, 64)
    outs = []
    for model in (fused, split):
        out = model(clip[:, :4], 3, future=clip[:, 4:], mask=torch.ones(2, 5)).frames
        out.pow(2).mean().backward()
        outs.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-4)
    for g_split, g_fused in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g_split, g_fused, atol=1e-5, rtol=1e-4)


def test_seq2seq_matches_the_tutorial_parameter_count():
    model = framecast.create_model("convlstm_seq2seq")
    assert sum(p.numel() for p in model.parameters()) == 1_036_097


def test_stacked_convlstm_official_size():
    model = framecast.create_model("convlstm")
    # 4 cells of 128 channels over patched (16-channel) frames, filter 5, no bias; 1x1 head.
    cells = (16 + 128) * 512 * 25 + 3 * (256 * 512 * 25)
    assert sum(p.numel() for p in model.parameters()) == cells + 128 * 16


def test_patch_channel_order_matches_official_reshape():
    x = torch.rand(2, 3, 2, 8, 12)  # (B, T, C, H, W)
    p = 4
    # the official code works channels-last: (B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C)
    a = x.permute(0, 1, 3, 4, 2).numpy()
    b, t, h, w, c = a.shape
    a = a.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h // p, w // p, p * p * c)
    ours = patchify(x, p).permute(0, 1, 3, 4, 2).numpy()
    np.testing.assert_array_equal(ours, a)
    torch.testing.assert_close(unpatchify(patchify(x, p), p), x)


def test_unknown_model_and_key_are_named():
    with pytest.raises(ConfigError, match="unknown model 'convlsmt'.*did you mean 'convlstm'"):
        framecast.create_model("convlsmt")
    with pytest.raises(ConfigError, match="model.num_hiden.*did you mean 'model.num_hidden'"):
        framecast.create_model("convlstm", num_hiden=(8,))


def test_bad_patch_and_input_shapes_raise_with_numbers():
    with pytest.raises(ValueError, match="patch_size 5 does not divide image_size 64"):
        framecast.create_model("convlstm", patch_size=5)
    model = framecast.create_model("convlstm", num_hidden=(4,), filter_size=3)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        framecast.forecast(model, torch.rand(4, 1, 64), 2)
    with pytest.raises(ValueError, match="3 channels but the model expects 1"):
        framecast.forecast(model, torch.rand(1, 4, 3, 64, 64), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        framecast.forecast(model, torch.rand(1, 4, 1, 64, 64) * 255, 2)


def test_baselines():
    x = torch.rand(2, 4, 1, 8, 8)
    torch.testing.assert_close(
        framecast.forecast(framecast.create_model("copy_last"), x, 3), x[:, -1:].expand(-1, 3, -1, -1, -1)
    )
    assert framecast.forecast(framecast.create_model("blank"), x, 3).abs().sum() == 0


def test_rollout_mask_feeds_true_frames():
    """With an all-ones mask the model sees only true frames, so predictions don't depend on
    its own earlier outputs: changing a future frame changes only later predictions."""
    torch.manual_seed(0)
    model = framecast.create_model("convlstm", num_hidden=(4,), filter_size=3, patch_size=4)
    clip = torch.rand(1, 6, 1, 64, 64)
    ones = torch.ones(1, 4)
    a = model(clip[:, :3], 3, future=clip[:, 3:], mask=ones).frames
    clip2 = clip.clone()
    clip2[:, 4] = 0
    b = model(clip2[:, :3], 3, future=clip2[:, 3:], mask=ones).frames
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4], b[:, 4])


def test_maxvit_window_that_does_not_fit_is_one_clear_error():
    with pytest.raises(
        ValueError, match=r"window_size 3 does not divide the 16x16 feature map .* sizes that fit: \[1, 2, 4, 8, 16\]"
    ):
        framecast.create_model("maxvit", window_size=3)
    with pytest.raises(ValueError, match="grid_size 5"):
        framecast.create_model("maxvit", grid_size=5)


def test_maxvit_uses_timm_blocks_and_rolls_forward_in_chunks():
    from timm.models.maxxvit import MaxxVitBlock

    torch.manual_seed(0)
    model = framecast.create_model("maxvit", **small("maxvit")).eval()
    assert any(isinstance(m, MaxxVitBlock) for m in model.modules())
    x = torch.rand(1, 4, 1, 64, 64)
    five = framecast.forecast(model, x, 5)  # chunks of 2: 2 + 2 + 1
    two = framecast.forecast(model, x, 2)
    torch.testing.assert_close(five[:, :2], two)
    # the second chunk is the model applied to the context shifted by its own first chunk
    shifted = torch.cat([x, two], dim=1)[:, -4:]
    torch.testing.assert_close(five[:, 2:4], framecast.forecast(model, shifted, 2))
