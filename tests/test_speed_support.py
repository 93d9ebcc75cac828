"""Each piece of framecast.speed steps aside silently where it cannot work: a GPU, macOS, musl,
ARM, no oneDNN bf16, a torch without the arena's private calls. Each condition is simulated
(``framecast.speed.support`` reads it at call time); the piece is then off, nothing is warned
or logged, and the result is what it is without the piece."""

import types
import warnings

import numpy as np
import pytest
import torch

import framecast
from framecast import speed
from framecast.config import TrainerConfig
from framecast.forecasting import Forecaster
from framecast.speed import malloc, support
from framecast.speed import precision as P
from framecast.speed import probe as Q

CONDITIONS = {
    "macos": lambda mp: mp.setattr(support, "sys", types.SimpleNamespace(platform="darwin")),
    "musl": lambda mp: mp.setattr(support.platform, "libc_ver", lambda *a, **k: ("", "")),
    "arm": lambda mp: mp.setattr(support.platform, "machine", lambda: "aarch64"),
    "no-onednn-bf16": lambda mp: mp.setattr(torch.backends.mkldnn, "is_available", lambda: False),
}
# what each condition turns off (the others may still work there)
OFF = {
    "macos": {"malloc"},
    "musl": {"malloc"},
    "arm": {"malloc", "packed", "bf16"},
    "no-onednn-bf16": {"packed", "bf16"},
}


@pytest.fixture
def simulate(monkeypatch):
    """``simulate(name)``: the machine as that condition makes it, for this test only."""
    support._glibc_mallopt.cache_clear()
    monkeypatch.setattr(malloc, "_applied", None)
    monkeypatch.delenv(P.ENV_PIN, raising=False)

    def apply(name: str) -> None:
        CONDITIONS[name](monkeypatch)
        support._glibc_mallopt.cache_clear()

    yield apply
    support._glibc_mallopt.cache_clear()


@pytest.fixture
def silent(capsys):
    """Asserts, after the test, that nothing was warned or printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    out = capsys.readouterr()
    assert [str(w.message) for w in caught] == [] and out.err == "" and out.out == ""


def test_each_condition_is_detected(simulate):
    simulate("macos")
    assert support.is_macos() and not support.has_glibc()


@pytest.mark.parametrize("name", ["musl", "arm", "no-onednn-bf16"])
def test_each_other_condition_is_detected(simulate, name):
    simulate(name)
    assert (not support.has_glibc()) is (name == "musl")
    assert support.is_arm() is (name == "arm")
    assert (not support.has_onednn_bf16()) is (name in ("arm", "no-onednn-bf16"))
    assert (not support.has_packing_ops()) is (name in ("arm", "no-onednn-bf16"))


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_malloc_tuning_steps_aside(simulate, silent, monkeypatch, name):
    simulate(name)
    if "malloc" not in OFF[name]:
        return  # works there (tested in test_memory.py)
    monkeypatch.setattr(malloc, "_libc", lambda: pytest.fail("the C library was called"))
    monkeypatch.setattr(malloc, "_libc_trim", None)
    monkeypatch.setenv(malloc.ENV, "fixed")
    assert malloc.fix_mmap_threshold() is None and malloc.fix_mmap_threshold(force=True) is None
    assert speed.tune_malloc() is None and malloc.applied() is None
    if not support.has_glibc():
        malloc.malloc_trim()  # no glibc: nothing to give back through


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_packed_weights_step_aside_and_the_forecast_is_unchanged(simulate, silent, name):
    model = framecast.create_model("convlstm", size="test").eval()
    frames = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    kw = dict(precision="bf16-mixed", channels_last=False, log=None)
    plain = Forecaster(model, 2, n_context=3, **kw, pack_weights=False).predict(frames)
    simulate(name)
    f = Forecaster(model, 2, n_context=3, **kw, pack_weights=True)
    if "packed" in OFF[name]:
        assert f.packed == 0 and f.model is model
        np.testing.assert_array_equal(f.predict(frames), plain)


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_the_probe_leaves_bf16_out_where_it_cannot_run_natively(simulate, silent, monkeypatch, tmp_path, name):
    seen = []

    def probe_steps(model, candidates, **kw):
        seen.append(sorted({p for p, _ in candidates}))
        return {Q.key(p, cl): 0.1 for p, cl in candidates}, {"batch": 1, "frames": [2, 1], "rounds": 1}

    monkeypatch.setattr(Q, "probe_steps", probe_steps)
    simulate(name)
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path))
    c = P.resolve(framecast.create_model("convlstm", size="test"), batch=2, use_cache=False)
    if "bf16" in OFF[name]:
        assert seen == [["32"]] and c.precision == "32"
    else:
        assert seen and seen[0] in (["32"], ["32", "bf16-mixed"])


def test_on_a_gpu_the_arena_and_packing_step_aside(silent):
    """Simulated: the device is named, nothing runs on it."""
    assert speed.activation_arena(TrainerConfig(accelerator="gpu")) is None
    assert speed.activation_arena(TrainerConfig(accelerator="cpu")) is not None
    assert speed.activation_arena(TrainerConfig(accelerator="cpu", activation_arena=False)) is None
    model = framecast.create_model("convlstm", size="test").eval()
    assert speed.prepare_for_inference(model, speed.BF16, torch.device("cuda"), pack=True) == (model, 0)
    arena = speed.ActivationArena(min_bytes=0, engage_bytes=0)
    x = torch.randn(64, 64, requires_grad=True)
    with speed.saving(arena, "cuda"):
        x.exp().sum().backward()
    assert arena.copies == 0
    with speed.saving(arena, "cpu"):
        x.exp().sum().backward()
    assert arena.copies == 1


def test_without_the_private_calls_the_arena_steps_aside_and_training_is_unchanged(silent, monkeypatch):
    from framecast.config import RunConfig, build_dataclass
    from framecast.training.runner import make_task

    cfg = build_dataclass(RunConfig, {"model": {"name": "predrnn", "num_hidden": [8, 8], "filter_size": 3}})
    clip = torch.rand(2, cfg.data.n_context + cfg.data.n_future, 1, 64, 64)
    task = make_task(cfg)
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    assert not support.has_arena_calls()
    off = make_task(cfg)
    assert off.arena is None
    off.model.load_state_dict(task.model.state_dict())
    task.arena.min_bytes = 0
    losses = [t.loss(clip, None)[0] for t in (task, off)]
    assert torch.equal(*losses)
    arena = speed.ActivationArena(min_bytes=0)
    with arena.saving():  # used directly: no hooks, nothing copied
        torch.randn(8, 8, requires_grad=True).exp().sum().backward()
    assert arena.copies == 0
