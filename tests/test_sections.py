"""PredBench's tests as sections of a comparison: long-term (a horizon k times the training one),
generalization (other data, no retraining; shapes a model cannot take refused in one line) and
robustness (imperfect context against clean)."""

import json

import pytest

from framecast.errors import ConfigError
from framecast.evaluation.compare import build_compare_config, compare


def values(tiny_overrides, tmp_path, **extra):
    return {
        "models": {"convlstm": {"num_hidden": [8], "filter_size": 3}},
        "baselines": ["copy_last", "blank"],
        "data": tiny_overrides["data"],
        "trainer": tiny_overrides["trainer"],
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        **extra,
    }


def test_long_term_generalization_and_robustness_are_report_sections(tiny_overrides, tmp_path):
    cfg = build_compare_config(
        values(
            tiny_overrides,
            tmp_path,
            long_term=3,
            test_data={**tiny_overrides["data"], "num_digits": 3},
            robustness=["drop:0.5", "noise:0.2"],
        )
    )
    lines = []
    results = compare(cfg, log=lines.append)
    out = tmp_path / "report"
    report = (out / "report.md").read_text()
    for title in (
        "## Long-term 4 -> 9",
        "## Generalization to moving_mnist",
        "## Robustness drop 0.5",
        "## Robustness noise 0.2",
    ):
        assert title in report, title
    assert (out / "mse_per_horizon_long_term.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())["results"]
    for label in ("convlstm", "copy_last", "blank"):
        sections = saved[label]["sections"]
        long = sections["long-term 4 -> 9"]
        assert len(long["per_horizon"]["mse"]) == 9 and long["data"]["n_future"] == 9  # rolled out to the end
        assert sections["generalization to moving_mnist"]["data"]["n_clips"] == 6
    # blank predicts empty frames whatever the context: the corruptions cannot change its score
    blank = saved["blank"]
    assert blank["sections"]["robustness noise 0.2"]["mean"]["mse"] == pytest.approx(blank["test"]["mean"]["mse"])
    # copy_last repeats the last context frame: noise on it must cost MSE
    copy = saved["copy_last"]
    assert copy["sections"]["robustness noise 0.2"]["mean"]["mse"] > copy["test"]["mean"]["mse"]
    assert "| copy_last |" in report.split("## Robustness noise 0.2")[1]
    # every section is reused by a second run: nothing trained or tested again
    again = []
    compare(cfg, log=again.append)
    assert not any("testing" in line for line in again), again
    assert results["convlstm"]["sections"].keys() == saved["convlstm"]["sections"].keys()


def test_a_generalization_shape_the_model_cannot_take_is_refused_in_one_line(tiny_overrides, tmp_path):
    cfg = build_compare_config(values(tiny_overrides, tmp_path, test_data={**tiny_overrides["data"], "channels": 3}))
    compare(cfg, log=lambda *_: None)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Refused: `convlstm`: the model reads 1-channel frames but data.channels is 3" in report


def test_bad_section_settings_are_one_line(tiny_overrides, tmp_path):
    with pytest.raises(ConfigError, match="unknown corruption 'blur'; choose from drop, duplicate, noise"):
        build_compare_config(values(tiny_overrides, tmp_path, robustness=["blur:0.1"]))
    with pytest.raises(ConfigError, match=r"a drop rate is a probability in \[0, 1\], got 2"):
        build_compare_config(values(tiny_overrides, tmp_path, robustness=["drop:2"]))


def test_framecast_test_scores_the_corrupted_context_beside_the_clean(tmp_path, capsys):
    from framecast.cli import main

    args = ["test", "--model.name", "copy_last", "--data.test_size", "8", "--data.n_context", "4"]
    args += ["--data.n_future", "3", "--out", str(tmp_path), "--robustness", "noise:0.2", "--robustness", "drop:0.5"]
    assert main(args) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["robustness"]["seed"] == 0 and set(saved["robustness"]) == {"seed", "noise 0.2", "drop 0.5"}
    assert saved["robustness"]["noise 0.2"]["mean"]["mse"] > saved["mean"]["mse"]  # noise on the repeated frame
    paired = saved["robustness"]["noise 0.2"]["against_clean"]  # tested on the same clips
    assert paired["separable"] and paired["lo"] > 0 and paired["change"] > 0
    out = capsys.readouterr().out
    assert "context noise 0.2 (seed 0)" in out and "(holds) against clean on the same clips" in out
    assert main([*args[:-4], "--robustness", "blur:1"]) == 2  # one line, exit 2
    assert "unknown corruption 'blur'" in capsys.readouterr().err


def test_seeds_train_each_model_again_and_report_mean_and_spread(tiny_overrides, tmp_path):
    cfg = build_compare_config(values(tiny_overrides, tmp_path, seeds=2))
    compare(cfg, log=lambda *_: None)
    out = tmp_path / "report"
    assert (out / "runs" / "convlstm" / "seed-1" / "checkpoints" / "best.ckpt").is_file()
    conv = json.loads((out / "results.json").read_text())["results"]["convlstm"]
    seeds = conv["seeds"]
    assert seeds["n"] == 2 and seeds["train_seeds"] == [0, 1] and len(seeds["per_seed"]["mse"]) == 2
    assert seeds["per_seed"]["mse"][0] != seeds["per_seed"]["mse"][1]  # another seed, other weights
    assert conv["test"]["mean"]["mse"] == pytest.approx(sum(seeds["per_seed"]["mse"]) / 2)
    lo, hi = conv["test"]["ci95"]["mse"]
    assert lo <= conv["test"]["mean"]["mse"] <= hi
    report = (out / "report.md").read_text()
    assert "## Across 2 training seeds" in report and "trained with 2 seeds" in report
    assert "was trained once" not in report
    # more seeds later, and a section: the seeds already trained are reused, and every seed is
    # scored on the section (not seed 0 alone), its mean over seeds reported
    lines = []
    more = values(tiny_overrides, tmp_path, seeds=3, robustness=["noise:0.2"])
    compare(build_compare_config(more), log=lines.append)
    assert sum("training" in line for line in lines) == 1, lines
    assert sum("robustness noise 0.2: testing" in line for line in lines) == 3 + 2  # 3 seeds, 2 baselines
    conv = json.loads((out / "results.json").read_text())["results"]["convlstm"]
    noisy = conv["sections"]["robustness noise 0.2"]
    assert len(noisy["per_seed"]["mse"]) == 3 and noisy["bands"] == "range over seeds"
    assert noisy["mean"]["mse"] == pytest.approx(sum(noisy["per_seed"]["mse"]) / 3)


def test_other_evaluation_settings_retest_without_retraining(tiny_overrides, tmp_path):
    compare(build_compare_config(values(tiny_overrides, tmp_path)), log=lambda *_: None)
    out = tmp_path / "report"
    first = json.loads((out / "results.json").read_text())
    assert first["uncertainty"]["seed"] == 0 and first["uncertainty"]["block"] == 1  # generated clips share no frame
    lines = []
    cfg = build_compare_config(values(tiny_overrides, tmp_path, evaluation={"bootstrap_seed": 3}))
    compare(cfg, log=lines.append)
    assert not any("training" in line for line in lines), lines
    assert sum("testing again (other evaluation settings)" in line for line in lines) == 3, lines
    again = json.loads((out / "results.json").read_text())
    conv = again["results"]["convlstm"]
    assert again["uncertainty"]["seed"] == 3 and conv["test"]["bootstrap"]["seed"] == 3
    assert conv["test"]["mean"] == first["results"]["convlstm"]["test"]["mean"]  # the same weights
    assert conv["test"]["ci95"]["mse"] != first["results"]["convlstm"]["test"]["ci95"]["mse"]


def test_a_comparison_checks_model_keys_against_the_arrays_shape(tmp_path):
    """Gridded arrays: channels and frame size come from the file, so a model key that states
    them agrees with the data once it is read (at the entry), not with the defaults."""
    import numpy as np

    from tests.test_array import series

    np.save(tmp_path / "s.npy", series(60, 2, 8, 8))
    data = {"name": "array", "path": str(tmp_path / "s.npy"), "n_context": 3, "n_future": 2}
    cfg = build_compare_config({"models": {"convlstm": {"channels": 2, "image_size": 8}}, "data": data})
    assert (cfg.data.channels, cfg.data.image_size) == (2, 8)
    with pytest.raises(ConfigError, match="model.channels=3 disagrees with data.channels=2"):
        build_compare_config({"models": {"convlstm": {"channels": 3}}, "data": data})
