"""The Forecaster's ``compile=True`` (framecast.speed.compile): torch.compile of the recurrent
step, and the fallback to eager that says why. Compiling works in fp32 on every CPU; the one
test that compiles the packed bf16 copy skips alone where oneDNN has no native bf16."""

import numpy as np
import pytest
import torch

import framecast
from framecast.forecasting import Forecaster
from framecast.speed import support


@pytest.mark.parametrize(
    "precision, channels_last",
    [
        pytest.param(
            "bf16-mixed",
            True,
            marks=pytest.mark.skipif(not support.has_packing_ops(), reason="oneDNN has no native bf16 here"),
        ),
        ("32", False),
    ],
)
def test_a_compiled_forecaster_forecasts_as_the_eager_one_and_leaves_the_model_alone(precision, channels_last):
    # torch.compile (inductor) of the recurrent step: on the packed bf16 copy, and on a plain
    # copy of an fp32 model already in its layout (the caller's own object is never compiled)
    torch.manual_seed(0)
    model = framecast.create_model("predrnn", size="test").eval()
    frames = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    said: list[str] = []
    kw = dict(precision=precision, channels_last=channels_last, log=said.append)
    compiled = Forecaster(model, 3, n_context=4, **kw, pack_weights=True, compile=True)
    if not compiled.compiled and any("InvalidCxxCompiler" in line for line in said):
        pytest.skip("no C++ compiler for inductor on this machine (the fallback is tested below)")
    eager = Forecaster(model, 3, n_context=4, **kw, pack_weights=True)
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
