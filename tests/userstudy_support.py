"""Test fixtures for the user-study tests: a tiny synthetic dataset and FAKE retrieval methods.

The retrieval methods are not built yet, so the tests synthesize ``retrievals.json`` files in the
documented format (docs/architecture.md) from the patch table. These are test fixtures only:

* ``coherent``: object 0 gets a random training patch of its category; every other object a patch of
  its category *with the same hidden theme* when one exists (a greedy, perfectly compatible retriever);
* ``random``: a random training patch of the object's category (an incompatible retriever);
* ``mixed``: ``coherent`` for the first half of the objects, ``random`` after.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from retrievegan.data.coco import CocoStuffConfig
from retrievegan.data.patches import PatchConfig, build_patch_bank, load_patch_table
from retrievegan.data.preprocess import PreprocessConfig, preprocess
from retrievegan.data.scene_graph import read_split
from retrievegan.data.synth import SynthConfig, generate
from retrievegan.study.config import PlanConfig, UserStudyConfig
from retrievegan.study.pool import build_bundle

SETTING = "pred_bbox"
# fixture strategy of each method name used by the tests
STRATEGIES = {
    "retrievegan": ("coherent", 1),
    "pastegan": ("random", 2),
    "retrievegan_gt_only": ("mixed", 3),
    "retrievegan_occur_only": ("coherent", 4),
}


def tiny_dataset(root: Path) -> tuple[Path, Path]:
    """(canonical data dir, patch dir) of a tiny synthetic benchmark under ``root`` (built once)."""
    data_dir, patch_dir = root / "data" / "coco_stuff", root / "data" / "patches"
    if (patch_dir / "patches.csv").exists():
        return data_dir, patch_dir
    raw = root / "raw"
    generate(
        SynthConfig(seed=3, num_train=80, num_val=70, min_side=128, max_side=160),
        raw / "coco",
        raw / "vg",
        progress=False,
    )
    cfg = CocoStuffConfig.from_root(raw / "coco", num_val=10, num_test=50)
    preprocess("coco_stuff", cfg, PreprocessConfig(image_size=32, num_workers=1), data_dir, "tiny", progress=False)
    build_patch_bank(data_dir, PatchConfig(crop_size=16, num_workers=1), patch_dir, progress=False)
    return data_dir, patch_dir


def fake_retrievals(path: Path, method: str, data_dir: Path, patch_dir: Path, strategy: str, seed: int) -> Path:
    """Write a FAKE ``retrievals.json`` (test fixture) for every test scene graph, samples 0 and 1."""
    table = load_patch_table(patch_dir / "patches.csv")
    train = table[table["split"] == "train"]
    by_cat = {int(c): g for c, g in train.groupby("category")}
    by_cat_theme = {(int(c), int(t)): g for (c, t), g in train.groupby(["category", "theme"])}
    records = []
    for sample in (0, 1):
        rng = np.random.default_rng([seed, sample])
        for graph in read_split(data_dir / "test.json").graphs:
            ids: list[int] = []
            theme = None
            n = graph.num_real_objects
            for k, obj in enumerate(graph.objects[:-1]):
                coherent = strategy == "coherent" or (strategy == "mixed" and k < n // 2 + 1)
                pool = by_cat[obj.category]
                if coherent and theme is not None and (obj.category, theme) in by_cat_theme:
                    pool = by_cat_theme[(obj.category, theme)]
                row = pool.iloc[int(rng.integers(len(pool)))]
                ids.append(int(row["patch_id"]))
                if theme is None:
                    theme = int(row["theme"])
            records.append({"image_id": graph.image_id, "sample": sample, "patch_ids": ids})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": method, "setting": SETTING, "records": records}), encoding="utf-8")
    return path


def study_config(
    methods: tuple[str, ...] = ("pastegan", "retrievegan_gt_only", "retrievegan_occur_only"),
    trials_per_pair: int = 4,
    catch_trials: int = 2,
    min_response_ms: int = 0,
    catch_pool: int = 12,
) -> UserStudyConfig:
    """A small study; ``min_response_ms`` 0 because AppTest clicks come within milliseconds of a render."""
    return UserStudyConfig(
        reference="retrievegan",
        methods=methods,
        setting=SETTING,
        plan=PlanConfig(
            seed=0,
            trials_per_pair=trials_per_pair,
            catch_trials=catch_trials,
            catch_pool=catch_pool,
            min_response_ms=min_response_ms,
        ),
    )


def shared_root(tmp_path_factory) -> Path:  # noqa: ANN001 - pytest.TempPathFactory
    """One folder per test session for the tiny dataset and the bundles of every user-study test module."""
    root = tmp_path_factory.getbasetemp() / "userstudy-tiny"
    root.mkdir(exist_ok=True)
    return root


def tiny_study(root: Path, cfg: UserStudyConfig, name: str | None = None) -> Path:
    """Build (once) a study bundle at ``root/<name>`` (default: named by ``cfg``) from fake retrievals."""
    data_dir, patch_dir = tiny_dataset(root)
    if name is None:
        name = "study-" + hashlib.sha256(repr(cfg).encode("utf-8")).hexdigest()[:12]
    out = root / name
    if (out / "trials.json").exists():
        return out
    retrievals = {}
    for method in (cfg.reference, *cfg.methods):
        strategy, seed = STRATEGIES[method]
        retrievals[method] = fake_retrievals(
            root / "samples" / method / SETTING / "retrievals.json", method, data_dir, patch_dir, strategy, seed
        )
    build_bundle(retrievals, data_dir, patch_dir, cfg, out, dataset="tiny")
    return out


def responses_frame(store) -> pd.DataFrame:  # noqa: ANN001 - Store
    return store.export_responses()
