"""The rarity experiment's table, figure and report section (retrievegan rarity-experiment) from metric files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from retrievegan.errors import InputError
from retrievegan.eval.rarity_experiment import write_experiment
from retrievegan.runs import RARITY_RUNS, VARIANTS

# planted DS per (base, rebalanced) and seed: sg2im gains +0.02 in every seed, RetrieveGAN changes nothing on average
DS = {
    ("sg2im", False): [0.10, 0.12, 0.11],
    ("sg2im", True): [0.12, 0.14, 0.13],
    ("retrievegan", False): [0.30, 0.28, 0.32],
    ("retrievegan", True): [0.31, 0.27, 0.32],
}


def _write(tmp_path, runs=RARITY_RUNS):
    metrics, compat = [], []
    for name in runs:
        v = VARIANTS[name]
        key = (v.base, v.arm.endswith("_rarity"))
        seed = v.training_seed
        path = tmp_path / f"{name}_pred_bbox.json"
        path.write_text(
            json.dumps(
                {
                    "method": name,
                    "setting": "pred_bbox",
                    "split": "test",
                    "extractor": "synthnet",
                    "ds_network": "lpips_synthnet",
                    "num_images": 256,
                    "checkpoint_sha256": "x",
                    "seed": 0,
                    "metrics": {
                        "fid_synthnet_test_pred": 100.0 + 10 * seed + (5 if key[1] else 0),
                        "ds_lpips_synthnet_test_pred": DS[key][seed],
                        "ds_lpips_synthnet_test_pred_std": 0.01,
                    },
                }
            )
        )
        metrics.append(path)
        if v.base == "retrievegan":
            c = tmp_path / f"compat_{name}.json"
            c.write_text(json.dumps({"method": name, "setting": "pred_bbox", "metrics": {"compat_single_theme": 0.8}}))
            compat.append(c)
    return metrics, compat


def test_table_gives_seed_means_t_intervals_and_paired_differences_beside_the_supplement(tmp_path):
    metrics, compat = _write(tmp_path)
    paths = write_experiment(metrics, compat, tmp_path / "out", 0.95)
    assert {p.name for p in paths} == {
        "rarity_experiment.csv",
        "rarity_experiment.md",
        "rarity_experiment.tex",
        "rarity_runs.csv",
        "rarity_experiment.png",
        "rarity_section.md",
    }
    rows = list(csv.DictReader((tmp_path / "out/rarity_experiment.csv").open()))
    ds = next(k for k in rows[0] if k.startswith("DS (") and not k.endswith(("low", "high")))
    plain = rows[0]
    assert plain["Method"] == "sg2im" and plain["Rebalancing"] == "none" and plain["Seeds"] == "0,1,2"
    x = np.array(DS[("sg2im", False)])
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert np.isclose(float(plain[ds]), x.mean()) and np.isclose(float(plain[f"{ds} low"]), x.mean() - half)
    assert plain["Supplement LPIPS"] == "0.12" and plain["Comparable to the supplement"].startswith("value: no")
    assert plain["Compatibility (single theme)"].startswith("n/a: not a retrieval method")
    diff = rows[2]
    assert diff["Rebalancing"].startswith("difference") and np.isclose(float(diff[ds]), 0.02)
    assert np.isclose(float(diff["Supplement LPIPS"]), 0.01) and diff["Comparable to the supplement"].startswith(
        "direction only"
    )
    assert float(diff[f"{ds} low"]) == pytest.approx(0.02) == float(diff[f"{ds} high"])  # the same gain per seed
    retrieve_diff = rows[5]
    assert retrieve_diff["Method"] == "RetrieveGAN" and retrieve_diff["Supplement LPIPS"].startswith("n/a")
    assert float(retrieve_diff[f"{ds} low"]) < 0 < float(retrieve_diff[f"{ds} high"])
    assert rows[-1]["Supplement LPIPS"] == "0.19" and rows[-1][ds].startswith("n/a: not implemented")
    section = (tmp_path / "out/rarity_section.md").read_text()
    assert (
        "**sg2im**: DS with minus without rebalancing, paired over 3 seeds: +0.020 [+0.020, +0.020], higher in 3 "
        "of 3 seeds: raised; the same direction as the supplement's CRN: 0.12 -> 0.13 (+0.01" in section
    )
    assert (
        "**RetrieveGAN**: DS with minus without rebalancing, paired over 3 seeds: +0.000 [-0.025, +0.025], higher "
        "in 1 of 3 seeds: no measurable change (the interval includes 0); FID +5.0 [+5.0, +5.0] (lower is "
        "better); compatibility +0.000" in section
    )
    assert "ds_lpips_synthnet" in section and "direction of the change only" in section
    runs = list(csv.DictReader((tmp_path / "out/rarity_runs.csv").open()))
    assert len(runs) == 12 and {r["seed"] for r in runs} == {"0", "1", "2"}


def test_missing_arms_and_foreign_metric_files_are_errors(tmp_path):
    metrics, compat = _write(tmp_path, [r for r in RARITY_RUNS if not r.startswith("sg2im_rarity")])
    with pytest.raises(InputError, match="sg2im_rarity"):
        write_experiment(metrics, compat, tmp_path / "out")
    other = tmp_path / "retrievegan_pred_bbox.json"
    other.write_text(
        json.dumps(
            {
                "method": "retrievegan",
                "setting": "pred_bbox",
                "split": "test",
                "extractor": "synthnet",
                "ds_network": "lpips_synthnet",
                "metrics": {"ds_lpips_synthnet_test_pred": 0.1},
            }
        )
    )
    with pytest.raises(InputError, match="not an arm of the rarity experiment"):
        write_experiment([other], [], tmp_path / "out")
