"""Compatibility score on hand-built patch banks and retrievals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from retrievegan.errors import InputError
from retrievegan.eval import compatibility as compat

# bank: patch_id -> (split, category, theme)
BANK = [
    ("train", 1, 0),
    ("train", 1, 0),
    ("train", 1, 1),
    ("train", 1, 1),  # 0-3: category 1, themes 0/1
    ("train", 2, 0),
    ("train", 2, 0),  # 4-5: category 2, theme 0 only
    ("train", 3, 1),
    ("train", 3, 2),  # 6-7: category 3, themes 1/2
    ("val", 1, 0),  # 8: not in the retrieval bank
]


def write_bank(path):
    rows = [
        {
            "patch_id": i,
            "split": s,
            "image_index": i,
            "image_id": 100 + i,
            "object_index": 0,
            "category": c,
            "category_name": f"c{c}",
            "x0": 0.0,
            "y0": 0.0,
            "x1": 1.0,
            "y1": 1.0,
            "theme": t,
        }
        for i, (s, c, t) in enumerate(BANK)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_retrievals(path, records, method="retrievegan", setting="pred_bbox"):
    path.write_text(json.dumps({"method": method, "setting": setting, "records": records}))
    return path


def score(tmp_path, records, n_boot=500, seed=0, **kw):
    return compat.compatibility_score(
        write_retrievals(tmp_path / "r.json", records),
        write_bank(tmp_path / "p.csv"),
        "retrievegan",
        "pred_bbox",
        n_boot,
        0.95,
        seed,
        **kw,
    )


def test_single_theme_sets_score_one(tmp_path):
    records = [
        {"image_id": 1, "sample": 0, "patch_ids": [0, 1, 4]},  # themes 0 0 0
        {"image_id": 1, "sample": 1, "patch_ids": [2, 3, 6]},  # themes 1 1 1
        {"image_id": 2, "sample": 0, "patch_ids": [0, 5]},
    ]  # themes 0 0
    out = score(tmp_path, records)
    m = out["metrics"]
    assert m["compat_single_theme"] == 1.0 and m["compat_pairwise_same_theme"] == 1.0
    assert m["compat_single_theme_low"] == 1.0 and m["compat_single_theme_high"] == 1.0
    assert out["num_sets"] == 3 and out["num_scene_graphs"] == 2


def test_mixed_sets_are_scored_exactly(tmp_path):
    records = [
        {"image_id": 1, "sample": 0, "patch_ids": [0, 1, 2]},  # themes 0 0 1: not single, 1 of 3 pairs
        {"image_id": 2, "sample": 0, "patch_ids": [2, 6]},  # themes 1 1: single, 1 of 1 pairs
        {"image_id": 3, "sample": 0, "patch_ids": [0, 2, 7, 4]},  # themes 0 1 2 0: 1 of 6 pairs
        {"image_id": 4, "sample": 0, "patch_ids": [5]},
    ]  # single patch: skipped
    out = score(tmp_path, records)
    m = out["metrics"]
    assert m["compat_single_theme"] == pytest.approx(1 / 3)
    assert m["compat_pairwise_same_theme"] == pytest.approx((1 / 3 + 1 + 1 / 6) / 3)
    assert out["skipped_sets_below_two_patches"] == 1
    assert m["compat_single_theme_low"] <= m["compat_single_theme"] <= m["compat_single_theme_high"]
    assert m["compat_pairwise_same_theme_low"] < m["compat_pairwise_same_theme_high"]


def test_chance_level_uses_the_theme_mix_of_each_category(tmp_path):
    # category 1 is half theme 0 / half theme 1, category 2 is all theme 0 -> chance 0.5 for this pair
    out = score(tmp_path, [{"image_id": 1, "sample": 0, "patch_ids": [0, 4]}])
    assert out["metrics"]["compat_chance_pairwise_same_theme"] == pytest.approx(0.5)
    # two category-1 patches: 0.5^2 + 0.5^2
    out = score(tmp_path, [{"image_id": 1, "sample": 0, "patch_ids": [0, 2]}])
    assert out["metrics"]["compat_chance_pairwise_same_theme"] == pytest.approx(0.5)
    # category 2 with category 3 never share a theme
    out = score(tmp_path, [{"image_id": 1, "sample": 0, "patch_ids": [4, 6]}])
    assert out["metrics"]["compat_chance_pairwise_same_theme"] == 0.0


def test_bootstrap_is_seeded_and_independent_of_record_order(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for image_id in range(30):
        for sample in (0, 1):
            records.append(
                {
                    "image_id": image_id,
                    "sample": sample,
                    "patch_ids": [int(i) for i in rng.choice(8, size=3, replace=False)],
                }
            )
    a = score(tmp_path, records, seed=3)
    b = score(tmp_path, list(reversed(records)), seed=3)
    c = score(tmp_path, records, seed=4)
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["compat_pairwise_same_theme_low"] != c["metrics"]["compat_pairwise_same_theme_low"]
    assert a["metrics"]["compat_pairwise_same_theme"] == c["metrics"]["compat_pairwise_same_theme"]


def test_cluster_bootstrap_resamples_whole_scene_graphs():
    values = np.array([1.0, 1.0, 0.0, 0.0])
    clusters = np.array([7, 7, 9, 9])
    low, high = compat.cluster_bootstrap(values, clusters, 2000, 0.95, np.random.default_rng(0))
    assert (low, high) == (0.0, 1.0)  # with two clusters the mean is 0, 0.5 or 1


@pytest.mark.parametrize(
    "records, match",
    [
        ([{"image_id": 1, "sample": 0, "patch_ids": [0, 99]}], "patch id 99 is not in the retrieval bank"),
        ([{"image_id": 1, "sample": 0, "patch_ids": [0, 8]}], "patch id 8 is not in the retrieval bank"),
        ([{"image_id": 1, "sample": 0}], "missing key 'patch_ids'"),
        (
            [{"image_id": 1, "sample": 0, "patch_ids": [0, 1]}, {"image_id": 1, "sample": 0, "patch_ids": [0, 1]}],
            "duplicate record",
        ),
    ],
)
def test_bad_retrievals_name_file_and_record(tmp_path, records, match):
    with pytest.raises(InputError, match=match) as info:
        score(tmp_path, records)
    assert "r.json" in str(info.value) and "record" in str(info.value)


def test_wrong_method_is_refused(tmp_path):
    path = write_retrievals(tmp_path / "r.json", [{"image_id": 1, "sample": 0, "patch_ids": [0, 1]}], "pastegan")
    with pytest.raises(InputError, match="method is 'pastegan'"):
        compat.compatibility_score(path, write_bank(tmp_path / "p.csv"), "retrievegan", "pred_bbox", 10, 0.9, 0)


def test_on_the_tiny_benchmark_same_theme_retrieval_beats_random(tiny_dataset, tmp_path):
    from eval_support import same_category_retrievals

    csv = tiny_dataset.patches_dir / "patches.csv"
    graphs = tiny_dataset.data_dir / "test.json"
    results = {}
    for same in (True, False):
        path = write_retrievals(
            tmp_path / f"r{same}.json", same_category_retrievals(tiny_dataset.data_dir, csv, same_theme=same, seed=1)
        )
        results[same] = compat.compatibility_score(path, csv, "retrievegan", "pred_bbox", 200, 0.95, 0, graphs)
    assert results[True]["category_match"] == 1.0
    assert (
        results[True]["metrics"]["compat_pairwise_same_theme"] > results[False]["metrics"]["compat_pairwise_same_theme"]
    )
    assert results[False]["metrics"]["compat_pairwise_same_theme"] < 0.6


def test_patch_count_must_match_the_scene_graph(tiny_dataset, tmp_path):
    from eval_support import same_category_retrievals

    csv = tiny_dataset.patches_dir / "patches.csv"
    records = same_category_retrievals(tiny_dataset.data_dir, csv)
    records[3]["patch_ids"] = records[3]["patch_ids"][:-1]
    path = write_retrievals(tmp_path / "r.json", records)
    with pytest.raises(InputError, match="patch ids for .* real objects"):
        compat.compatibility_score(
            path, csv, "retrievegan", "pred_bbox", 10, 0.95, 0, tiny_dataset.data_dir / "test.json"
        )
