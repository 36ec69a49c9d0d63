"""The embedded synthetic benchmark: real-format files, pycocotools-readable, deterministic."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from conftest import coco_config_for
from pycocotools.coco import COCO

from retrievegan.data.preprocess import PreprocessConfig, preprocess
from retrievegan.data.synth import SynthConfig, generate


def tree_digest(root: Path, skip=("run.json",)) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def load_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_pycocotools_loads_and_decodes_every_mask(tiny_dataset):
    for split in ("train", "val"):
        for kind in ("instances", "stuff"):
            coco = load_coco(tiny_dataset.raw_coco / f"annotations/{kind}_{split}2017.json")
            anns = coco.loadAnns(coco.getAnnIds())
            assert anns
            for ann in anns:
                mask = coco.annToMask(ann)
                img = coco.imgs[ann["image_id"]]
                assert mask.shape == (img["height"], img["width"])
                assert mask.sum() > 0
                x, y, w, h = ann["bbox"]
                ys, xs = np.nonzero(mask)  # the box is the mask's extent
                assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
                if kind == "instances":
                    assert isinstance(ann["segmentation"], list)  # polygons for things
                else:
                    assert isinstance(ann["segmentation"]["counts"], str)  # compressed RLE for stuff
            themes = {img["synth_theme"] for img in coco.imgs.values()}
            assert themes <= set(range(8)) and len(themes) > 1
            cat_ids = {c["id"] for c in coco.loadCats(coco.getCatIds())}
            assert cat_ids <= set(range(1, 92)) if kind == "instances" else cat_ids <= set(range(92, 184))


def test_vg_files_are_consistent(tiny_dataset):
    vg = tiny_dataset.raw_vg
    images = json.loads((vg / "image_data.json").read_text())
    objects = {rec["image_id"]: rec["objects"] for rec in json.loads((vg / "objects.json").read_text())}
    rels = {rec["image_id"]: rec["relationships"] for rec in json.loads((vg / "relationships.json").read_text())}
    splits = json.loads((vg / "vg_splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [img["image_id"] for img in images]
    for img in images:
        assert (vg / "images/VG_100K" / f"{img['image_id']}.jpg").is_file()
        ids = {o["object_id"] for o in objects[img["image_id"]]}
        for rel in rels[img["image_id"]]:
            assert rel["subject"]["object_id"] in ids and rel["object"]["object_id"] in ids
    assert "disc" in (vg / "object_alias.txt").read_text()


def test_theme_is_shared_by_every_patch_of_an_image(tiny_dataset):
    import pandas as pd

    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    assert table.groupby(["split", "image_id"])["theme"].nunique().max() == 1


def test_same_seed_gives_byte_identical_outputs(tmp_path):
    cfg = SynthConfig(seed=11, num_train=6, num_val=4)
    generate(cfg, tmp_path / "a/coco", tmp_path / "a/vg", progress=False, workers=1)
    generate(cfg, tmp_path / "b/coco", tmp_path / "b/vg", progress=False, workers=2)
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b and len(a) > 20
    generate(SynthConfig(seed=12, num_train=6, num_val=4), tmp_path / "c/coco", tmp_path / "c/vg", progress=False)
    assert tree_digest(tmp_path / "c") != a


def test_preprocessing_is_byte_identical(tiny_dataset, tmp_path):
    cfg = coco_config_for(tiny_dataset.raw_coco, num_val=8, num_test=12)
    pp = PreprocessConfig(image_size=32, seed=0, num_workers=2)
    preprocess("coco_stuff", cfg, pp, tmp_path / "again", "tiny", progress=False)
    assert tree_digest(tmp_path / "again") == tree_digest(tiny_dataset.data_dir)
