from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import framecast
from framecast.errors import ConfigError
from framecast.layers import patchify, unpatchify
from framecast.registry import get_entry, model_size, register_model

MODELS = framecast.list_models()
TRAINABLE = [n for n in MODELS if get_entry(n).trainable]
# Every trainable model registers these sizes (registry.py); tests run the "test" one.
SIZES = ("published", "cpu", "test")


def small(name: str) -> nn.Module:
    """The model at its registered test size (baselines have no sizes)."""
    return framecast.create_model(name, size="test") if get_entry(name).trainable else framecast.create_model(name)


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_model_registers_its_sizes(name):
    """published (the paper's size), cpu (configs/cpu/<name>.yaml) and test (seconds on a CPU)."""
    missing = [s for s in SIZES if s not in get_entry(name).sizes]
    assert not missing, f"model '{name}' registers no {missing} size: add it to sizes= of its @register_model"


@pytest.mark.parametrize(("name", "size"), [(n, s) for n in MODELS for s in get_entry(n).sizes])
def test_every_registered_size_builds_at_its_size(name, size):
    entry = get_entry(name)
    model = framecast.create_model(name, size=size)  # published sizes are large: build only
    assert isinstance(model, entry.cls) and model.model_name == name
    assert model.config == entry.config_cls(**{**entry.defaults, **entry.sizes[size]})
    assert sum(p.numel() for p in model.parameters()) > 0


def test_size_picks_registered_overrides_and_explicit_keys_win():
    cpu = framecast.create_model("convlstm", size="cpu").config
    assert (cpu.num_hidden, cpu.filter_size, cpu.patch_size) == ((64, 64), 3, 8)
    mixed = framecast.create_model("convlstm", size="cpu", patch_size=4).config
    assert (mixed.num_hidden, mixed.patch_size) == ((64, 64), 4)
    assert framecast.create_model("convlstm", size=None).config.num_hidden == (128,) * 4  # no size: the defaults
    v2 = framecast.create_model("predrnn_v2", size="test").config
    assert v2.decouple_beta == 0.1 and v2.num_hidden == (8, 8)  # the variant's defaults stay under its sizes


def test_unknown_size_is_one_line_with_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"model 'convlstm' has no size 'cpuu' \(did you mean 'cpu'\?\); choose from: cpu, published, test",
    ):
        framecast.create_model("convlstm", size="cpuu")
    with pytest.raises(ConfigError, match="model 'blank' has no registered sizes"):
        framecast.create_model("blank", size="cpu")
    with pytest.raises(ConfigError, match="no size '8'"):
        model_size("convlstm", 8)


def test_register_model_refuses_sizes_that_are_not_config_fields():
    @dataclass
    class Cfg:
        width: int = 1

    @dataclass
    class SizeCfg:
        size: int = 1

    with pytest.raises(ValueError, match=r"size 'cpu' \['widht'\] are not fields of Cfg"):
        register_model("_bad_size", Cfg, sizes={"cpu": {"widht": 2}})(nn.Module)
    with pytest.raises(ValueError, match="'size' is reserved"):
        register_model("_bad_field", SizeCfg)(nn.Module)
    assert "_bad_size" not in framecast.list_models() and "_bad_field" not in framecast.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_predicts_future_shapes(name):
    torch.manual_seed(0)
    model = small(name)
    c = getattr(model.config, "channels", 1)
    context = torch.rand(2, 4, c, 64, 64)
    out = framecast.forecast(model, context, 3)
    assert out.shape == (2, 3, c, 64, 64)
    # forecast's [0, 1] range comes from its documented clamp: the model's own frames, clamped,
    # and nothing else (a check of out's range alone could not fail)
    with torch.no_grad():
        raw = model.eval()(context, 3).future(3)
    assert raw.shape == out.shape and torch.isfinite(raw).all()
    torch.testing.assert_close(out, raw.float().clamp(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_model_gets_gradients(name):
    torch.manual_seed(0)
    model = small(name)
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
    model = small("maxvit").eval()
    assert any(isinstance(m, MaxxVitBlock) for m in model.modules())
    x = torch.rand(1, 4, 1, 64, 64)
    five = framecast.forecast(model, x, 5)  # chunks of 2: 2 + 2 + 1
    two = framecast.forecast(model, x, 2)
    torch.testing.assert_close(five[:, :2], two)
    # the second chunk is the model applied to the context shifted by its own first chunk
    shifted = torch.cat([x, two], dim=1)[:, -4:]
    torch.testing.assert_close(five[:, 2:4], framecast.forecast(model, shifted, 2))


def test_memory_format_looks_past_a_weight_that_is_both_layouts():
    """A grey-frame encoder's first conv (1 input channel) is contiguous in both layouts; the
    model's layout is that of the first weight that tells them apart."""
    model = framecast.create_model("simvp", size="test")
    assert model.memory_format == torch.contiguous_format
    model.to(memory_format=torch.channels_last)
    first = next(p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert first.shape[1] == 1 and first.is_contiguous()  # the ambiguous one comes first
    assert model.memory_format == torch.channels_last
