"""precision: auto and channels_last: auto (framecast.speed.precision and .probe), the machine
profile (framecast.machine), and that bf16-mixed keeps quality: training per step and forecasts.

The choice is tested with a timing stub (``probe_steps`` replaced): both branches, whatever this
machine's own bf16 speed is. The cache lives in ``tmp_path`` (``FRAMECAST_CACHE``)."""

import json
import shutil

import numpy as np
import pytest
import torch

import framecast
from framecast import machine
from framecast.config import TrainConfig, build_run_config, merge, to_dict
from framecast.data.moving_mnist import generate, shipped_digits
from framecast.errors import ConfigError
from framecast.forecasting.forecaster import Forecaster, is_channels_last
from framecast.registry import get_entry
from framecast.speed import precision as P
from framecast.speed import probe as Q
from framecast.speed import support
from framecast.training.runner import ConfigChanged, fit
from framecast.training.task import FrameTask
from framecast.training.testing import test_model as score_model

TRAINABLE = [n for n in framecast.list_models() if get_entry(n).trainable]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(P.ENV_PIN, raising=False)  # conftest pins auto to fp32 for the rest
    return tmp_path / "cache"


def test_the_environment_pins_what_auto_means(monkeypatch):
    model = framecast.create_model("convlstm", size="test")
    monkeypatch.setattr(P, "_timings", lambda *a, **k: pytest.fail("pinned: no probe"))
    lines = []
    monkeypatch.setenv(P.ENV_PIN, "bf16-mixed")
    choice = P.resolve(model, log=lines.append)
    assert (choice.precision, choice.channels_last, choice.source, lines) == ("bf16-mixed", True, "env", [])
    assert P.resolve(model, "32", True, log=lines.append).precision == "32"  # explicit still wins
    monkeypatch.setenv(P.ENV_PIN, "fast")
    with pytest.raises(ConfigError, match="FRAMECAST_PRECISION='fast': set it to 32 or bf16-mixed"):
        P.resolve(model)


def stub(monkeypatch, bf16_speed: float, cl_speed: float = 1.0) -> list:
    """Replace the probe: bf16-mixed runs ``bf16_speed`` x fp32, channels-last ``cl_speed`` x
    contiguous. Returns the list of calls (one per measurement)."""
    calls = []
    monkeypatch.setattr(support, "has_onednn_bf16", lambda: True)  # the choice on any CPU

    def probe_steps(model, candidates, **kw):
        calls.append([f"{p}/{P.layout_name(cl)}" for p, cl in candidates])
        times = {
            f"{p}/{P.layout_name(cl)}": 0.1 / (bf16_speed if p == P.BF16 else 1.0) / (cl_speed if cl else 1.0)
            for p, cl in candidates
        }
        return times, {"batch": kw["batch"], "frames": [kw["n_context"], kw["n_future"]], "rounds": 1}

    monkeypatch.setattr(Q, "probe_steps", probe_steps)
    return calls


def tiny():
    return framecast.create_model("convlstm", size="test")


def test_probe_finding_bf16_2x_faster_picks_bf16_mixed_and_caches_it(monkeypatch, cache):
    calls = stub(monkeypatch, bf16_speed=2.0, cl_speed=1.1)
    lines = []
    c = P.resolve(tiny(), batch=4, n_context=4, n_future=3, log=lines.append)
    assert (c.precision, c.channels_last, c.source) == ("bf16-mixed", True, "measured")
    assert c.bf16_speedup == pytest.approx(2.0)
    assert lines == [c.describe()]
    assert lines[0].startswith("precision: auto -> bf16-mixed, channels-last (2.0x fp32 on this CPU;")
    assert "measured now" in lines[0] and len(calls) == 1 and len(calls[0]) == 4
    assert list((cache / "precision").glob("*.json"))  # in the cache folder the env var names
    again = P.resolve(tiny(), batch=4, n_context=4, n_future=3, log=lines.append)
    assert (again.precision, again.source) == ("bf16-mixed", "cached") and len(calls) == 1
    assert lines[-1].endswith("; cached)")


def test_probe_finding_bf16_slower_picks_fp32(monkeypatch):
    stub(monkeypatch, bf16_speed=0.7, cl_speed=0.9)
    c = P.resolve(tiny(), batch=4, n_context=4, n_future=3)
    assert (c.precision, c.channels_last) == ("32", False)
    assert "bf16-mixed 0.70x fp32" in c.reason and "contiguous 1.11x channels-last" in c.reason


def test_bf16_needs_a_margin_to_be_chosen(monkeypatch):
    """bf16 rounds: a speed-up inside the noise (here 1.05x < BF16_MARGIN) keeps fp32."""
    stub(monkeypatch, bf16_speed=1.05)
    assert P.resolve(tiny(), batch=4).precision == "32"


def test_cache_is_per_machine_profile_and_model_shape(monkeypatch):
    calls = stub(monkeypatch, bf16_speed=2.0)
    P.resolve(tiny(), batch=4)
    P.resolve(tiny(), batch=4)
    assert len(calls) == 1
    P.resolve(tiny(), batch=8)  # another shape
    P.resolve(framecast.create_model("convlstm", size="test", num_hidden=(16, 16)), batch=4)
    assert len(calls) == 3
    other = {**machine.profile_key(), "torch_threads": 64}  # another machine profile
    monkeypatch.setattr(P, "profile_key", lambda: other)
    P.resolve(tiny(), batch=4)
    assert len(calls) == 4


def test_a_change_to_the_models_code_invalidates_the_cached_choice(monkeypatch):
    """A new kernel changes the speeds, not the config: the cache key holds a digest of the code."""
    calls = stub(monkeypatch, bf16_speed=2.0)
    fingerprint = P.code_fingerprint()
    assert len(fingerprint) == 16 and fingerprint == P.code_fingerprint()
    P.resolve(tiny(), batch=4)
    P.resolve(tiny(), batch=4)
    assert len(calls) == 1
    monkeypatch.setattr(P, "_FINGERPRINT", "0" * 16)  # as if models/ or layers/ had changed
    P.resolve(tiny(), batch=4)
    assert len(calls) == 2


def test_explicit_values_are_obeyed(monkeypatch):
    calls = stub(monkeypatch, bf16_speed=2.0)
    c = P.resolve(tiny(), "32", False)
    assert (c.precision, c.channels_last, c.source) == ("32", False, "explicit") and not calls
    stub(monkeypatch, bf16_speed=0.5)
    c = P.resolve(tiny(), "bf16-mixed", "auto")  # bf16 is slow here, but asked for: obeyed
    assert c.precision == "bf16-mixed"
    calls = stub(monkeypatch, bf16_speed=3.0, cl_speed=2.0)
    c = P.resolve(tiny(), "auto", False)  # layout pinned: only the precision is measured
    assert (c.precision, c.channels_last) == ("bf16-mixed", False) and len(calls[0]) == 2


def test_gpu_picks_bf16_where_supported_without_a_probe(monkeypatch):
    calls = stub(monkeypatch, bf16_speed=0.5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    c = P.resolve(tiny(), accelerator="gpu")
    assert (c.precision, c.channels_last, c.source) == ("bf16-mixed", True, "gpu") and not calls
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve(tiny(), accelerator="cuda").precision == "32"


class FakeClock:
    """``time.perf_counter`` for the probe: only the stubbed steps advance it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def fake_steps(monkeypatch, clock, unit: float, bf16_cost: float, window: bool = False) -> list:
    """Steps that cost, on ``clock``, ``unit`` seconds per sample and frame step of a forward pass
    (a training step 3x that), times ``bf16_cost`` in bf16. Returns the calls made."""
    monkeypatch.setattr(Q, "time", clock)
    monkeypatch.setattr(Q, "_cpu_busy", lambda: None)
    monkeypatch.setattr(Q, "is_window_model", lambda m: window)
    calls = []

    def step(model, precision, kind, b, nc, nf, size):
        frames = 1 if window else nc + nf - 1
        cost = unit * b * frames * (3 if kind == "train" else 1) * (bf16_cost if precision == Q.BF16 else 1.0)

        def run():
            calls.append((precision, kind, b))
            clock.now += cost

        return run

    monkeypatch.setattr(Q, "_step", step)
    return calls


CANDIDATES = [(p, cl) for p in (Q.FP32, Q.BF16) for cl in (False, True)]


@pytest.mark.parametrize("window", [False, True], ids=["recurrent", "window"])
@pytest.mark.parametrize("bf16_cost", [25.0, 1.0, 0.4])
@pytest.mark.parametrize(
    "unit, budget",
    [(1e-4, Q.PROBE_SECONDS), (3e-3, Q.PROBE_SECONDS), (0.09, Q.LARGE_SECONDS), (0.15, Q.LARGE_SECONDS)],
    ids=["cpu-size", "cpu-size-slow", "published", "published-slow"],
)
def test_the_probe_stays_within_its_budget_on_any_cpu(monkeypatch, window, bf16_cost, unit, budget):
    """At most 5 s per model shape at the cpu sizes and 10 s at the published ones, timed on a
    fake clock: ``unit`` is a batch-1 forward frame step in fp32 (the official PredRNN on an
    AVX2-only CPU: ~0.09 s), and bf16 costs ``bf16_cost`` times fp32 (25x: a CPU without native
    bf16, where the probe once took 30 s). A candidate clearly slower is timed no further."""
    clock = FakeClock()
    calls = fake_steps(monkeypatch, clock, unit, bf16_cost, window)
    times, info = Q.probe_steps(tiny(), CANDIDATES, batch=16, n_context=2, n_future=1)
    assert clock.now <= budget + 1e-9, f"the probe took {clock.now:.2f} s"
    assert clock.now <= info["budget_seconds"] + 1e-9 and info["budget_seconds"] <= budget
    if budget == Q.PROBE_SECONDS:
        assert info["budget_seconds"] == Q.PROBE_SECONDS
    assert set(times) == {Q.key(p, cl) for p, cl in CANDIDATES} and all(t > 0 for t in times.values())
    fp32 = min(times[Q.key(Q.FP32, cl)] for cl in (False, True))
    bf16 = min(times[Q.key(Q.BF16, cl)] for cl in (False, True))
    if bf16_cost >= 25:  # screened out after one batch-1 forward pass: never a training step
        assert not [c for c in calls if c[0] == Q.BF16 and c[1] == "train"]
        assert set(info["estimated"]) >= {Q.key(Q.BF16, cl) for cl in (False, True)}
        assert bf16 > 10 * fp32
    elif bf16_cost < 1:
        assert bf16 < fp32
    if unit <= 1e-4:  # cheap steps: the run's batch and timed rounds
        assert info["batch"] == 16 and info["rounds"] >= 1


def test_a_candidate_clearly_slower_is_timed_no_further(monkeypatch):
    """bf16 at 2x fp32's cost (passes the screen): dropped after two timed rounds, fp32 timed on."""
    clock = FakeClock()
    calls = fake_steps(monkeypatch, clock, 1e-4, 2.0)
    times, info = Q.probe_steps(tiny(), CANDIDATES, batch=16, n_context=2, n_future=1)
    timed = [c for c in calls if c[1] == "train"]
    fp32, bf16 = sum(c[0] == Q.FP32 for c in timed), sum(c[0] == Q.BF16 for c in timed)
    assert info["rounds"] > 2 and bf16 == 2 * 3 and fp32 == 2 * (1 + info["rounds"])  # warm-up + rounds
    assert times[Q.key(Q.BF16, False)] == pytest.approx(2 * times[Q.key(Q.FP32, False)])


def test_models_without_parameters_and_several_machines_are_not_probed(monkeypatch):
    calls = stub(monkeypatch, bf16_speed=2.0)
    assert P.resolve(framecast.create_model("copy_last")).precision == "32"
    assert P.resolve(tiny(), num_nodes=2).precision == "32"
    assert not calls


def test_the_real_probe_is_short_times_every_candidate_and_keeps_the_model(monkeypatch):
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    c = P.resolve(model, batch=4, n_context=4, n_future=3)
    precisions = ("32", "bf16-mixed") if support.has_onednn_bf16() else ("32",)
    assert set(c.step_seconds) == {f"{p}/{layout}" for p in precisions for layout in ("contiguous", "channels-last")}
    assert all(t > 0 for t in c.step_seconds.values())
    # timed rounds after the warm-up fit where the machine is not too busy (the budget decides)
    assert c.probe["seconds"] > 0 and c.probe["rounds"] >= 0
    assert c.probe["budget_seconds"] in (Q.PROBE_SECONDS, Q.LARGE_SECONDS)
    assert torch.equal(torch.get_rng_state(), rng)  # a run's seeded stream is not disturbed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert c.precision in ("32", "bf16-mixed")


def test_a_window_model_is_probed_near_the_runs_batch(monkeypatch):
    """SimVP's step has no shorter stand-in and its bf16 gain shows only near the run's batch
    (1.06x fp32 at batch 3, 1.3x at 16 on an AMX CPU): it affords a warm-up and one round per
    candidate, not three, so at a step cost where a recurrent model's batch shrinks, a window
    model keeps the run's (fake clock; the cost per sample as in the budget test)."""
    window = framecast.create_model("simvp", size="test")
    assert Q.is_window_model(window) and not Q.is_window_model(tiny())
    batches = {}
    for is_window in (False, True):
        fake_steps(monkeypatch, FakeClock(), 0.01, 1.0, window=is_window)
        batches[is_window] = Q.probe_steps(tiny(), CANDIDATES, batch=16, n_context=2, n_future=1)[1]["batch"]
    assert batches[True] == 16 and batches[False] < 16


def test_without_onednn_bf16_auto_is_fp32_without_a_bf16_candidate(monkeypatch):
    """No native bf16 (an AVX2-only CPU, ARM): bf16 is not measured at all, silently."""
    monkeypatch.setattr(support, "has_onednn_bf16", lambda: False)
    lines = []
    c = P.resolve(tiny(), batch=4, log=lines.append)
    assert c.precision == "32" and set(c.step_seconds) == {"32/contiguous", "32/channels-last"}
    assert "bf16" not in lines[0].split("(", 1)[1]  # no word about bf16
    assert P.resolve(tiny(), "auto", False).source == "fixed"  # one candidate: nothing to measure


def test_machine_profile_names_the_cpu_flags_and_versions():
    prof = machine.machine_profile("32", "channels-last")
    assert set(prof["cpu_flags"]) <= set(machine.CPU_FLAGS)
    assert prof["torch"] == torch.__version__ and prof["torch_threads"] == torch.get_num_threads()
    assert prof["precision"] == "32" and prof["layout"] == "channels-last"
    assert "torch " + torch.__version__ in machine.describe(prof)


def test_config_takes_auto_true_and_false():
    t = build_run_config({}).trainer
    assert (t.precision, t.channels_last) == ("auto", "auto")  # the defaults
    for value, want in (("true", True), ("false", False), (True, True), ("auto", "auto")):
        assert build_run_config({"trainer": {"channels_last": value}}).trainer.channels_last == want
    with pytest.raises(ConfigError, match="channels_last"):
        build_run_config({"trainer": {"channels_last": "sometimes"}})


def test_fit_stores_the_resolved_choice_and_resume_keeps_it(monkeypatch, tiny_overrides, tmp_path):
    """``auto`` resolves before training; config.yaml, the checkpoint and train_stats.json
    store what ran. A resumed ``auto`` run keeps the checkpoint's precision, even where the
    probe now says otherwise, so it is no config change; an explicit other precision is."""
    stub(monkeypatch, bf16_speed=2.0)
    tiny_overrides["trainer"].pop("precision", None)
    stats = fit(build_run_config(tiny_overrides))
    run = tmp_path / "run"
    assert stats["precision"]["precision"] == "bf16-mixed" and stats["precision"]["requested"]["precision"] == "auto"
    saved = json.loads((run / "train_stats.json").read_text())["precision"]
    assert saved["machine"]["precision"] == "bf16-mixed" and saved["machine"]["cpu"] == machine.cpu_info()["cpu"]
    assert "precision: bf16-mixed" in (run / "config.yaml").read_text()

    calls = stub(monkeypatch, bf16_speed=0.5)  # "another machine": fp32 would now be chosen
    more = build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 2}}))
    second = fit(more, resume=True)
    assert second["steps"] == 4 and second["precision"]["precision"] == "bf16-mixed"
    assert second["precision"]["source"] == "resumed" and not calls
    with pytest.raises(ConfigChanged, match=r"trainer.precision: bf16-mixed -> 32"):
        fit(build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 3, "precision": "32"}})))


def test_test_model_records_precision_and_machine(monkeypatch, tiny_overrides):
    stub(monkeypatch, bf16_speed=0.7)
    cfg = build_run_config(tiny_overrides)
    res = score_model(framecast.create_model("convlstm", num_hidden=(8, 8), filter_size=3), cfg)
    assert res["precision"]["precision"] == "32" and res["precision"]["probe"]["batch"] == cfg.data.batch_size
    assert res["precision"]["machine"]["torch"] == torch.__version__


# --------------------------------------------------------------------------- quality


def _clips(n: int, length: int, channels: int, seed: int) -> torch.Tensor:
    x = torch.from_numpy(generate(np.random.default_rng(seed), shipped_digits("train"), n, length))
    return x.float().div(255)[:, :, None].expand(-1, -1, channels, -1, -1).contiguous()


def _train(name: str, bf16: bool, steps: int = 20, batch: int = 4) -> tuple[FrameTask, float, float, torch.Tensor]:
    """``steps`` Adam steps of ``name`` at its test size from one seed on the same clips; returns
    the task, the held-out loss (fp32) before and after, and the held-out clips."""
    torch.manual_seed(0)
    model = framecast.create_model(name, size="test")
    nc = getattr(model.config, "n_context", 4)
    nf = min(3, getattr(model.config, "n_out", 3))
    task = FrameTask(name, to_dict(model.config), nc, nf, to_dict(TrainConfig(sampling="none")))
    task.model.load_state_dict(model.state_dict())
    channels = getattr(model.config, "channels", 1)
    data, held_out = _clips(steps * batch, nc + nf, channels, 1), _clips(8, nc + nf, channels, 2)
    with torch.no_grad():
        before = task.loss(held_out, None)[0].item()
    opt = torch.optim.Adam(task.model.parameters(), 1e-3)
    for s in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # what Lightning's bf16-mixed runs
            loss, _ = task.loss(data[s * batch : (s + 1) * batch], None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = task.loss(held_out, None)[0].item()
    return task, before, after, held_out


# A bf16-mixed forecast of 10 frames against the fp32 one, from the same fp32-trained weights:
# (mean absolute difference per pixel on the [0, 1] scale, forecast MSE against the truth
# within this share of fp32's). Measured here: 0.0001-0.0005 and under 0.1% for the recurrent
# models; MaxViT predicts chunks that return as bf16 context: 0.0004 / 0.01% (grey) and 0.014 /
# 4.4% (RGB, 20 steps trained).
FORECAST_TOLERANCE = {"maxvit": (0.03, 0.10), "maxvit_rgb": (0.03, 0.10)}
DEFAULT_FORECAST_TOLERANCE = (0.005, 0.01)


@pytest.mark.parametrize("name", TRAINABLE)
def test_bf16_mixed_trains_to_fp32_quality_per_step_and_forecasts_alike(name):
    """20 steps in bf16-mixed end within 2% of fp32's held-out loss (from the same seed on the
    same clips); a bf16-mixed forecast of 10 frames from the fp32-trained model stays within
    ``FORECAST_TOLERANCE`` of the fp32 forecast."""
    fp32, before, after, held_out = _train(name, bf16=False)
    bf16, _, after_bf16, _ = _train(name, bf16=True)
    assert after < 0.95 * before, "training must move for the comparison to mean something"
    assert abs(after_bf16 - after) <= 0.02 * after, (after, after_bf16)
    # bf16 really ran: the weights took other roundings
    assert any(not torch.equal(a, b) for a, b in zip(fp32.model.parameters(), bf16.model.parameters()))

    model, nc = fp32.model, fp32.n_context
    ref = Forecaster(model, 10, nc, precision="32", log=None, channels_last=False)  # no probe: the
    low = Forecaster(model, 10, nc, precision="bf16-mixed", log=None, channels_last=False)  # same layout
    assert (ref.precision, low.precision) == ("32", "bf16-mixed")
    clips = _clips(4, nc + 10, held_out.shape[2], 5)
    diff, mse32, mse16 = [], [], []
    for clip in clips:
        truth = clip[nc:].permute(0, 2, 3, 1).numpy()  # (10, H, W, C)
        a, b = ref.predict(clip[:nc]), low.predict(clip[:nc])
        assert a.shape == b.shape == truth.shape and not np.array_equal(a, b)
        diff.append(np.abs(a - b).mean())
        mse32.append(((a - truth) ** 2).mean())
        mse16.append(((b - truth) ** 2).mean())
    max_diff, max_mse = FORECAST_TOLERANCE.get(name, DEFAULT_FORECAST_TOLERANCE)
    assert np.mean(diff) <= max_diff, np.mean(diff)
    assert abs(np.mean(mse16) - np.mean(mse32)) <= max_mse * np.mean(mse32), (np.mean(mse32), np.mean(mse16))


def test_forecaster_auto_follows_the_probe(monkeypatch):
    stub(monkeypatch, bf16_speed=2.0)
    lines = []
    f = Forecaster(framecast.create_model("predrnn", size="test"), 3, n_context=4, log=lines.append)
    assert f.precision == "bf16-mixed" and lines[0].startswith("precision: auto -> bf16-mixed, contiguous")
    out = f.predict(np.random.rand(4, 64, 64).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 64, 64, 1)
    stub(monkeypatch, bf16_speed=0.7)
    assert Forecaster(framecast.create_model("convlstm", size="test"), 3, log=None).precision == "32"


def test_forecaster_runs_a_copy_in_the_layout_its_probe_found_faster(monkeypatch, cache):
    """channels_last: auto probes both layouts at batch 1; the faster one runs in a copy of the
    model, so the caller's weights keep their layout; an explicit layout is obeyed the same way."""
    model = framecast.create_model("predrnn", size="test")
    contiguous = [p.is_contiguous() for p in model.parameters()]
    frames = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    calls = stub(monkeypatch, bf16_speed=0.7, cl_speed=1.5)
    fast = Forecaster(model, 3, n_context=4, log=None)
    assert calls == [["32/contiguous", "32/channels-last", "bf16-mixed/contiguous", "bf16-mixed/channels-last"]]
    assert (fast.precision, fast.choice.channels_last) == ("32", True)
    assert fast.model is not model and is_channels_last(fast.model) and not is_channels_last(model)
    assert [p.is_contiguous() for p in model.parameters()] == contiguous  # the caller's weights unmoved
    shutil.rmtree(cache)  # another machine, as it were: measured again
    stub(monkeypatch, bf16_speed=0.7, cl_speed=0.8)
    slow = Forecaster(model, 3, n_context=4, log=None)
    assert not slow.choice.channels_last and slow.model is model  # already in the faster layout: no copy
    # the same frames in either layout (float sums in another order: a tolerance, not equality)
    np.testing.assert_allclose(fast.predict(frames), slow.predict(frames), atol=1e-4)
    pinned = Forecaster(model, 3, n_context=4, precision="32", channels_last=False, log=None)
    assert pinned.model is model and not pinned.choice.channels_last
    monkeypatch.setenv(P.ENV_PIN, "32")  # nothing measured: auto keeps the model's own layout
    kept = Forecaster(model, 3, n_context=4, log=None)
    assert kept.model is model and not kept.choice.channels_last and kept.choice.source == "env"
    assert P.resolve(model).channels_last  # training's auto, unmeasured: channels-last, as before


def test_compare_report_records_machine_and_precision(monkeypatch, tiny_overrides, tmp_path):
    from framecast.evaluation.compare import build_compare_config, compare

    stub(monkeypatch, bf16_speed=0.7, cl_speed=1.2)
    values = {
        "models": {"convlstm": {"num_hidden": [8], "filter_size": 3}},
        "baselines": ["copy_last"],
        "data": tiny_overrides["data"],
        "trainer": tiny_overrides["trainer"],
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        "lpips": "off",
    }
    compare(build_compare_config(values), log=lambda *_: None)
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["machine"]["cpu"] == machine.cpu_info()["cpu"] and results["machine"]["torch"] == torch.__version__
    conv = results["results"]["convlstm"]
    assert conv["train_precision"]["precision"] == "32" and conv["train_precision"]["layout"] == "channels-last"
    assert conv["test"]["precision"]["precision"] == "32"
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"Machine: {machine.cpu_info()['cpu']}" in report
    assert "convlstm trained in 32, channels-last and tested in 32, channels-last" in report


def test_a_probe_on_a_busy_cpu_says_so_and_is_measured_again_after_an_hour(monkeypatch, cache):
    calls = stub(monkeypatch, bf16_speed=2.0)
    real = Q.probe_steps

    def busy(*args, **kw):
        times, info = real(*args, **kw)
        return times, {**info, "others_cpu_share": 0.6}

    monkeypatch.setattr(Q, "probe_steps", busy)
    first = P.resolve(tiny(), batch=4)
    assert "other processes took 60% of the CPU" in first.reason and first.source == "measured"
    assert P.resolve(tiny(), batch=4).source == "cached" and len(calls) == 1  # runs close in time agree
    (entry,) = (cache / "precision").glob("*.json")
    saved = json.loads(entry.read_text())
    entry.write_text(json.dumps({**saved, "measured_at": saved["measured_at"] - 2 * P.BUSY_TTL}))
    assert P.resolve(tiny(), batch=4).source == "measured" and len(calls) == 2
