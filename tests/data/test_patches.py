"""Patch bank: one crop per real object, aligned with its metadata, cut at the ground-truth box."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import coco_config_for
from PIL import Image
from rawfixtures import coco_pair, standard_image

from retrievegan.data.patches import PatchConfig, build_patch_bank, crop_box_pixels, load_patch_table
from retrievegan.data.preprocess import PreprocessConfig, preprocess
from retrievegan.data.scene_graph import read_split


def test_bank_aligned_with_scene_graphs(tiny_dataset):
    bank = np.load(tiny_dataset.patches_dir / "patches.npy", mmap_mode="r")
    table = load_patch_table(tiny_dataset.patches_dir / "patches.csv")
    assert bank.shape == (len(table), 16, 16, 3) and bank.dtype == np.uint8
    assert (table["patch_id"] == np.arange(len(table))).all()
    for split in ("train", "val", "test"):
        graphs = read_split(tiny_dataset.data_dir / f"{split}.json").graphs
        rows = table[table["split"] == split]
        assert len(rows) == sum(g.num_real_objects for g in graphs)
        for row in rows.itertuples():
            obj = graphs[row.image_index].objects[row.object_index]
            assert row.image_id == graphs[row.image_index].image_id
            assert row.category == obj.category
            assert (row.x0, row.y0, row.x1, row.y1) == pytest.approx(obj.box, abs=1e-6)
            assert row.theme == graphs[row.image_index].theme


def test_crop_cuts_the_box(tmp_path):
    coco_pair([standard_image(i, 1) for i in (1, 2, 3)], tmp_path, "train")
    coco_pair([standard_image(i, 1) for i in (10, 11)], tmp_path, "val")
    # paint the first person box of image 1 pure green in the raw file
    path = tmp_path / "images/train2017/000000000001.png"
    pixels = np.asarray(Image.open(path)).copy()
    pixels[40:70, 5:13] = (0, 255, 0)
    Image.fromarray(pixels).save(path)
    preprocess(
        "coco_stuff",
        coco_config_for(tmp_path, num_val=1, num_test=1),
        PreprocessConfig(image_size=16, num_workers=1),
        tmp_path / "data",
        "t",
        progress=False,
    )
    build_patch_bank(tmp_path / "data", PatchConfig(crop_size=8, num_workers=1), tmp_path / "patches", progress=False)
    bank = np.load(tmp_path / "patches/patches.npy")
    table = load_patch_table(tmp_path / "patches/patches.csv")
    first = table[(table.image_id == 1) & (table.object_index == 0)].patch_id.item()
    assert (bank[first] == (0, 255, 0)).all()
    assert table["theme"].isna().all()  # real-format data without themes


def test_crop_box_pixels_cover_and_clip():
    assert crop_box_pixels((0.05, 0.4, 0.13, 0.7), 100, 100) == (5, 40, 13, 70)
    assert crop_box_pixels((0.0, 0.0, 1.0, 1.0), 64, 48) == (0, 0, 64, 48)
    assert crop_box_pixels((0.999, 0.5, 1.0, 0.5), 100, 100) == (99, 50, 100, 51)  # at least one pixel
