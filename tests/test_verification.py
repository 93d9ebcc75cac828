"""CSI, POD, FAR and FSS of gridded forecasts: pysteps' scores, accumulated over clips and
processes as pysteps accumulates them, reported per horizon step with their thresholds."""

import json

import numpy as np
import pytest

pytest.importorskip("pysteps")
from pysteps.verification import detcatscores, spatialscores  # noqa: E402

from framecast.cli import main  # noqa: E402
from framecast.evaluation.verification import Verification  # noqa: E402


def test_scores_equal_pysteps_over_all_clips():
    rng = np.random.default_rng(0)
    pred, obs = rng.gamma(1.0, 1.0, (2, 5, 3, 1, 12, 12)), rng.gamma(1.0, 1.0, (2, 5, 3, 1, 12, 12))
    obs[0, 0, 0, 0, :2] = np.nan  # masked pixels are left out
    v = Verification(3, ["rain"], [1.0, 2.0], [1, 3])
    sums = v.empty()
    for p, o in zip(pred, obs):  # two batches (or two processes): sums add up
        v.accumulate(sums, p, o)
    got = v.compute(sums)
    f, o = pred.reshape(10, 3, 12, 12), obs.reshape(10, 3, 12, 12)
    for step in range(3):
        for thr in (1.0, 2.0):
            table = detcatscores.det_cat_fct_init(thr)
            fss = spatialscores.fss_init(thr, 3)
            for clip in range(10):
                detcatscores.det_cat_fct_accum(table, f[clip, step], o[clip, step])
                spatialscores.fss_accum(fss, np.where(np.isnan(o[clip, step]), np.nan, f[clip, step]), o[clip, step])
            want = detcatscores.det_cat_fct_compute(table, scores=["CSI", "POD", "FAR"])
            assert got[f"csi_{thr:g}"][step].item() == pytest.approx(want["CSI"])
            assert got[f"pod_{thr:g}"][step].item() == pytest.approx(want["POD"])
            assert got[f"far_{thr:g}"][step].item() == pytest.approx(want["FAR"])
            assert got[f"fss_{thr:g}_3"][step].item() == pytest.approx(spatialscores.fss_compute(fss))
    assert set(got) == {f"{k}_{t}" for t in ("1", "2") for k in ("csi", "pod", "far")} | {
        f"fss_{t}_{s}" for t in ("1", "2") for s in (1, 3)
    }


def test_framecast_test_reports_them_with_their_thresholds(tmp_path, capsys):
    from tests.test_array import series

    np.save(tmp_path / "s.npy", series(60, 1, 8, 8))
    args = ["test", "--model.name", "copy_last", "--data.name", "array", "--data.path", str(tmp_path / "s.npy")]
    args += ["--data.n_context", "3", "--data.n_future", "2", "--out", str(tmp_path / "out")]
    assert main([*args, "--data.thresholds", "[100, 104]", "--data.fss_scales", "[1, 3]"]) == 0
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name in ("csi_100", "pod_104", "far_100", "fss_104_3"):
        assert 0.0 <= saved["mean"][name] <= 1.0 and len(saved["per_horizon"][name]) == 2, name
    assert saved["metrics"]["thresholds"] == [100.0, 104.0] and saved["metrics"]["fss_scales"] == [1, 3]
    assert main([*args, "--data.fss_scales", "[3]"]) == 2
    assert "data.fss_scales needs data.thresholds" in capsys.readouterr().err
