"""benchmarks/speed.py --check: which targets apply on this machine, and the one-clip limit
measured against this run's bf16 conv peak rather than a fixed number of seconds."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_bench", ROOT / "benchmarks" / "speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(**kw):
    base = {
        "model": "predrnn",
        "style": "framecast",
        "precision": "bf16",
        "probe_bf16_speedup": 1.8,
        "train_speedup_vs_reference": 2.2,
        "train_share_of_bf16_peak": 0.7,
        "peak_rss_gib": 3.3,
        "infer_flops_per_sample": 232e9,
        "forecast_one_clip_s": 0.6,
    }
    return {**base, **kw}


PEAKS = {"fp32": 200e9, "bf16": 400e9}  # limit: 232e9 / 400e9 = 0.58 s; 1.3 x that = 0.754 s


def test_the_clip_limit_is_this_machines_flops_over_its_bf16_peak(speed):
    ok = speed.check_targets([row(forecast_one_clip_s=0.75)], PEAKS)
    slow = speed.check_targets([row(forecast_one_clip_s=0.76)], PEAKS)
    clip_ok = [line for line in ok if "one clip" in line]
    clip_slow = [line for line in slow if "one clip" in line]
    assert clip_ok[0].startswith("PASS") and "0.58 s" in clip_ok[0]
    assert clip_slow[0].startswith("FAIL")
    # a machine with twice the bf16 peak halves the limit: the same 0.6 s clip fails there
    fast_machine = speed.check_targets([row()], {"fp32": 200e9, "bf16": 800e9})
    assert [line for line in fast_machine if "one clip" in line][0].startswith("FAIL")


def test_bf16_targets_are_skipped_where_the_probe_finds_bf16_slow(speed):
    lines = speed.check_targets([row(probe_bf16_speedup=0.8, precision="fp32", forecast_one_clip_s=9.0)], PEAKS)
    speed_lines = [line for line in lines if "memory" not in line]
    assert speed_lines and all(line.startswith("SKIP") for line in speed_lines)
    assert any("0.80x fp32" in line for line in speed_lines)
    memory = [line for line in lines if "memory" in line]
    assert memory and memory[0].startswith("PASS")  # the memory target applies everywhere


def test_a_bf16_run_below_the_speed_targets_fails(speed):
    lines = speed.check_targets([row(train_speedup_vs_reference=1.5, peak_rss_gib=4.5)], PEAKS)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any(">= 2x reference" in line for line in failed)
    assert any("peak memory" in line for line in failed)


def test_the_clip_target_takes_the_compiled_forecaster_where_it_is_faster_and_says_so(speed):
    lines = speed.check_targets(
        [row(forecast_one_clip_s=0.9, forecast_one_clip_compiled_s=0.7, forecast_one_clip_compile_s=12.0)], PEAKS
    )
    clip = [line for line in lines if "one clip" in line][0]
    assert clip.startswith("PASS") and "compile=True" in clip and "12 s" in clip and "0.70 s" in clip
    slower = speed.check_targets(
        [row(forecast_one_clip_s=0.9, forecast_one_clip_compiled_s=1.0, forecast_one_clip_compile_s=12.0)], PEAKS
    )
    clip = [line for line in slower if "one clip" in line][0]
    assert clip.startswith("FAIL") and "the Forecaster)" in clip and "0.90 s" in clip


def test_the_clip_line_also_shows_the_peak_measured_beside_the_clip_without_letting_it_decide(speed):
    # the run's peak (400 GFLOP/s) decides; a slower machine at the clip's time is only reported
    lines = speed.check_targets([row(forecast_one_clip_s=0.9, clip_time_bf16_peak_flop_per_s=200e9)], PEAKS)
    clip = [line for line in lines if "one clip" in line][0]
    assert clip.startswith("FAIL") and "beside the clip: 200 GFLOP/s, 0.78 x its limit" in clip
