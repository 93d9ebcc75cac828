"""Prepacked bf16 convolutions for inference (framecast.speed.packed): the Forecaster's bf16 forecasts
on a CPU, the same as autocast's within bf16 rounding, the caller's model untouched; ``auto``
packs only where the packed copy measured faster. Tests that run oneDNN's bf16 ops skip alone
where it has none (``needs_onednn_bf16``); the others run on every CPU."""

import numpy as np
import pytest
import torch
from torch import nn

import framecast
from framecast.forecasting import Forecaster
from framecast.speed import packed as packing
from framecast.speed import support
from framecast.speed.packed import PackedConv2d, pack_convolutions

needs_onednn_bf16 = pytest.mark.skipif(
    not support.has_packing_ops(), reason="oneDNN has no native bf16 (or no convolution ops) here"
)


@needs_onednn_bf16
@pytest.mark.parametrize("groups, bias, stride", [(1, False, 1), (4, True, 1), (1, True, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_packed_convolution_computes_what_autocast_does(groups, bias, stride, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, stride=stride, padding=1, groups=groups, bias=bias)
    x = torch.randn(2, 16, 12, 12)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = conv(x)
        got = PackedConv2d(conv)(x)
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
    assert got.stride() == want.stride()  # F.conv2d's layout: what follows sums in the same order
    # oneDNN may pick another algorithm for either path on another CPU: bf16 rounding, not equality
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    assert conv.weight.dtype == torch.float32  # the module packed from is left as it was


@needs_onednn_bf16
def test_a_packed_convolution_reorders_its_weight_for_each_input_shape_and_thread_count():
    # a layout picked without the input's shape can send oneDNN to a slow kernel (84-120 ms against
    # 0.4 ms for PredRNN's conv_m at one thread here): each shape gets its own, made once
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    packed = PackedConv2d(conv)
    threads = torch.get_num_threads()
    shapes = [(1, 8, 10, 10), (3, 8, 10, 10), (1, 8, 6, 14), (1, 8, 10, 10)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for shape in shapes:
            x = torch.randn(shape)
            torch.testing.assert_close(packed(x).float(), conv(x).float(), rtol=2e-2, atol=2e-2)
        assert set(packed._packed) == {(s, threads) for s in shapes}  # the repeat reuses its own
        other = 2 if threads == 1 else 1
        torch.set_num_threads(other)
        try:  # another thread count: its own layout (one thread was where oneDNN's trap was)
            torch.testing.assert_close(packed(x).float(), conv(x).float(), rtol=2e-2, atol=2e-2)
            assert (tuple(x.shape), other) in packed._packed and (tuple(x.shape), threads) in packed._packed
        finally:
            torch.set_num_threads(threads)
        first = packed.packed_for(torch.empty(shapes[0]))
        assert packed.packed_for(torch.empty(shapes[0])) is first
    # a bounded cache: the least recently used shape is dropped first
    assert len(packed._packed) == PackedConv2d.max_shapes
    order = list(packed._packed)
    assert order[-1] == (shapes[0], threads)  # just used: the newest, though made first
    packed.packed_for(torch.empty(1, 8, 4, 4))  # one more shape: the least recently used goes
    assert (shapes[0], threads) in packed._packed and order[0] not in packed._packed
    assert len(packed._packed) == PackedConv2d.max_shapes


@needs_onednn_bf16
@pytest.mark.parametrize("name", ["predrnn", "convlstm", "simvp", "phydnet"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_bf16_forecaster_packs_a_copy_and_forecasts_the_same(name, channels_last):
    torch.manual_seed(0)
    model = framecast.create_model(name, size="test").eval()
    kinds = [type(m) for m in model.modules()]
    size = model.config.image_size if hasattr(model.config, "image_size") else 64
    frames = np.random.default_rng(0).random((4, size, size)).astype(np.float32)
    kw = dict(precision="bf16-mixed", channels_last=channels_last, log=None)
    packed = Forecaster(model, 3, n_context=4, **kw, pack_weights=True)
    plain = Forecaster(model, 3, n_context=4, **kw, pack_weights=False)
    assert packed.packed > 0 and packed.model is not model and plain.packed == 0
    assert [type(m) for m in model.modules()] == kinds  # the caller's model keeps its own convolutions
    assert any(isinstance(m, PackedConv2d) for m in packed.model.modules())
    a, b = packed.predict(frames), plain.predict(frames)
    assert a.shape == b.shape == (3, size, size, 1)
    # the same arithmetic (bit for bit on the machine it was written on); oneDNN's algorithm may
    # differ per path and CPU: a bf16 step (1/256 at 0.5) on average at most
    assert np.abs(a - b).mean() < 1 / 256, np.abs(a - b).mean()
    for frame in frames:  # streaming (a recurrent model's frame_step) runs the packed copy too
        a, b = packed.push(frame), plain.push(frame)
    assert np.abs(a - b).mean() < 1 / 256, np.abs(a - b).mean()
    fp32 = Forecaster(model, 3, n_context=4, precision="32", channels_last=False, log=None)
    assert fp32.packed == 0 and fp32.model is model  # fp32 runs the model as it is


@needs_onednn_bf16
def test_what_cannot_be_packed_is_left_as_it_is():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    same, count = pack_convolutions(model)
    assert same is model and count == 0
    mixed = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    twin, count = pack_convolutions(mixed)
    assert count == 1 and isinstance(twin[0], PackedConv2d) and type(twin[1]) is nn.Conv2d
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(twin(x).float(), mixed(x).float(), rtol=2e-2, atol=2e-2)


@needs_onednn_bf16
def test_auto_packs_only_where_the_packed_copy_measured_faster(monkeypatch, tmp_path):
    """``pack_weights="auto"`` (the default) follows ``packed.pays``: at least PACK_GAIN (1.2x) as
    fast at batch 1 here; the verdict is cached, so the second Forecaster measures nothing."""
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path))
    model = framecast.create_model("convlstm", size="test").eval()
    kw = dict(precision="bf16-mixed", channels_last=False, log=None)
    monkeypatch.setattr(packing, "pays", lambda *a, **k: pytest.fail("pinned: nothing measured"))
    assert Forecaster(model, 3, n_context=4, **kw).packed == 0  # $FRAMECAST_PRECISION (conftest): no probe
    monkeypatch.delenv("FRAMECAST_PRECISION")
    for speedup, packs in ((1.5, True), (1.1, False)):
        monkeypatch.setattr(packing, "pays", lambda *a, s=speedup, **k: {"pays": s >= packing.PACK_GAIN, "speedup": s})
        f = Forecaster(model, 3, n_context=4, **kw)
        assert (f.packed > 0) is packs and (f.model is model) is not packs
    monkeypatch.undo()
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path))
    monkeypatch.delenv("FRAMECAST_PRECISION")
    twin, count = pack_convolutions(model)
    first = packing.pays(model, twin, 4, 3, 64)
    assert first["source"] == "measured" and first["speedup"] > 0 and isinstance(first["pays"], bool)
    again = packing.pays(model, twin, 4, 3, 64)
    assert again == {**first, "source": "cached"}
    with pytest.raises(ValueError, match="pack_weights"):
        Forecaster(model, 3, n_context=4, **kw, pack_weights="sometimes")


def test_without_onednn_bf16_nothing_is_packed_and_the_forecast_runs(monkeypatch):
    """No native bf16 (an AVX2-only CPU, ARM): the Forecaster runs the model as it is, silently."""
    monkeypatch.setattr(support, "has_onednn_bf16", lambda: False)
    model = framecast.create_model("convlstm", size="test").eval()
    said: list[str] = []
    f = Forecaster(
        model, 2, n_context=3, precision="bf16-mixed", channels_last=False, log=said.append, pack_weights=True
    )
    assert f.packed == 0 and f.model is model and said == []
    assert f.predict(np.zeros((3, 64, 64), np.float32)).shape == (2, 64, 64, 1)
