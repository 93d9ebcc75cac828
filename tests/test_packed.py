"""Prepacked bf16 convolutions for inference (framecast.speed.packed): the Forecaster's bf16 forecasts
on a CPU, the same as autocast's within bf16 rounding, the caller's model untouched."""

import numpy as np
import pytest
import torch
from torch import nn

import framecast
from framecast.forecasting import Forecaster
from framecast.speed.packed import PackedConv2d, available, pack_convolutions

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN convolution ops")


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


@pytest.mark.parametrize("name", ["predrnn", "convlstm", "simvp", "phydnet"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_bf16_forecaster_packs_a_copy_and_forecasts_the_same(name, channels_last):
    torch.manual_seed(0)
    model = framecast.create_model(name, size="test").eval()
    kinds = [type(m) for m in model.modules()]
    size = model.config.image_size if hasattr(model.config, "image_size") else 64
    frames = np.random.default_rng(0).random((4, size, size)).astype(np.float32)
    kw = dict(precision="bf16-mixed", channels_last=channels_last, log=None)
    packed = Forecaster(model, 3, n_context=4, **kw)
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


@pytest.mark.parametrize("precision, channels_last", [("bf16-mixed", True), ("32", False)])
def test_a_compiled_forecaster_forecasts_as_the_eager_one_and_leaves_the_model_alone(precision, channels_last):
    # torch.compile (inductor) of the recurrent step: on the packed bf16 copy, and on a plain
    # copy of an fp32 model already in its layout (the caller's own object is never compiled)
    torch.manual_seed(0)
    model = framecast.create_model("predrnn", size="test").eval()
    frames = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    said: list[str] = []
    kw = dict(precision=precision, channels_last=channels_last, log=said.append)
    compiled = Forecaster(model, 3, n_context=4, **kw, compile=True)
    if not compiled.compiled and any("InvalidCxxCompiler" in line for line in said):
        pytest.skip("no C++ compiler for inductor on this machine (the fallback is tested below)")
    eager = Forecaster(model, 3, n_context=4, **kw)
    assert compiled.compiled and not eager.compiled and compiled.compile_seconds > 0
    assert (compiled.packed > 0) == (precision == "bf16-mixed")
    assert any("compiled (torch.compile" in line for line in said), said
    assert "step" not in vars(model) and compiled.model is not model  # the caller's step is its own
    assert "step" in vars(compiled.model)
    a, b = compiled.predict(frames), eager.predict(frames)
    # fused arithmetic rounds otherwise than eager's op by op: rounding, not equality
    assert np.abs(a - b).mean() < 1 / 256, np.abs(a - b).mean()
    for frame in frames:  # streaming steps run compiled too
        a, b = compiled.push(frame), eager.push(frame)
    assert np.abs(a - b).mean() < 1 / 256, np.abs(a - b).mean()
    assert compiled.compiled  # nothing fell back on the way


def _failing_compile(error: Exception, works: list[bool] | None = None, failures: list[int] | None = None):
    """A stand-in for torch.compile whose compiled function raises ``error`` (while
    ``works[0]`` is False, if given; else always), counting its failed calls in ``failures``."""

    def fake(fn, **kwargs):
        def call(*args, **kw):
            if works is not None and works[0]:
                return fn(*args, **kw)
            if failures is not None:
                failures.append(1)
            raise error

        return call

    return fake


@pytest.mark.parametrize(
    "error, reason",
    [
        (
            torch._dynamo.exc.BackendCompilerFailed(
                lambda: None, RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore"), None
            ),
            "(RuntimeError: InvalidCxxCompiler: no working C++ compiler found)",
        ),
        (AssertionError(), "(AssertionError)"),
    ],
)
def test_where_compiling_fails_the_forecaster_says_why_and_runs_eagerly(monkeypatch, error, reason):
    monkeypatch.setattr(torch, "compile", _failing_compile(error))
    model = framecast.create_model("convlstm", size="test").eval()
    said: list[str] = []
    f = Forecaster(model, 2, n_context=3, precision="32", channels_last=False, log=said.append, compile=True)
    assert not f.compiled
    assert [line for line in said if line.startswith("compile:")] == [
        f"compile: torch.compile of the model's step failed, forecasting eagerly {reason}"
    ]
    assert "step" not in vars(f.model)  # the class's own step again
    out = f.predict(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32))
    assert out.shape == (2, 64, 64, 1)


def test_a_recompilation_that_fails_later_falls_back_to_eager_once(monkeypatch):
    works, failures = [True], []
    monkeypatch.setattr(torch, "compile", _failing_compile(RuntimeError("C++ compile error"), works, failures))
    model = framecast.create_model("convlstm", size="test").eval()
    said: list[str] = []
    kw = dict(precision="32", channels_last=False, log=said.append)
    f = Forecaster(model, 2, n_context=3, **kw, compile=True)
    assert f.compiled and "step" in vars(f.model) and f.compile_options == {"cpp_wrapper": True}
    works[0] = False  # e.g. a new frame size whose graph inductor cannot build
    frames = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    got = f.predict(frames)
    assert not f.compiled and "step" not in vars(f.model)
    # ConvLSTM's rollout took the compiled step once, at its start: one failure, then eager
    assert len(failures) == 1
    assert [line for line in said if "recompiling" in line] == [
        "compile: recompiling the model's step failed, forecasting eagerly (RuntimeError: C++ compile error)"
    ]
    np.testing.assert_array_equal(got, Forecaster(model, 2, n_context=3, **kw).predict(frames))


def test_an_error_of_the_callers_own_is_raised_and_compiling_kept(monkeypatch):
    # an error eager raises too (here: frames of the wrong size for a fixed-size model) is not a
    # compile failure: it reaches the caller as itself, and the compiled step stays
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    model = framecast.create_model("convlstm", size="test").eval()
    said: list[str] = []
    f = Forecaster(model, 2, n_context=3, precision="32", channels_last=False, log=said.append, compile=True)
    assert f.compiled
    state = torch.zeros(1)  # not a ConvLSTM state: the step fails, compiled and eager alike
    with pytest.raises(Exception) as caught:
        f.model.step(torch.zeros(1, 1, 64, 64), state)
    assert not isinstance(caught.value, AssertionError)
    assert f.compiled and "step" in vars(f.model)
    assert not [line for line in said if "recompiling" in line]


def test_a_compiled_forecaster_warms_up_a_model_of_any_channel_count(monkeypatch):
    # the warm-up's frames go in as (T, C, H, W): two channels (gridded data) are not taken for
    # a width; torch.compile stood in for by the function itself (no inductor time)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    model = framecast.create_model("convlstm", size="test", channels=2).eval()
    f = Forecaster(model, 2, n_context=3, precision="32", channels_last=False, log=None, compile=True)
    assert f.compiled
    frames = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float32)
    assert f.predict(frames).shape == (2, 64, 64, 2)
