"""Shared fixtures. Tests never read results/: they build what they need in temporary folders."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

# Two cores are shared by the whole suite: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclasses.dataclass(frozen=True)
class TinyDataset:
    """A tiny synthetic benchmark, preprocessed (COCO-Stuff format) and with its patch bank."""

    root: Path
    raw_coco: Path
    raw_vg: Path
    data_dir: Path  # canonical files of the coco_stuff source
    vg_data_dir: Path  # canonical files of the visual_genome source
    patches_dir: Path
    image_size: int
    crop_size: int


def coco_config_for(raw_coco: Path, **overrides):
    from retrievegan.data.coco import CocoStuffConfig

    return CocoStuffConfig.from_root(raw_coco, **overrides)


def vg_config_for(raw_vg: Path, **overrides):
    from retrievegan.data.vg import VisualGenomeConfig

    return VisualGenomeConfig.from_root(raw_vg, **overrides)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> TinyDataset:
    """48 train + 30 val synthetic images -> coco_stuff (val 8, test 12) and VG canonical data at 32 px,
    patch bank at 16 px. Built once per test session (a few seconds)."""
    from retrievegan.data.patches import PatchConfig, build_patch_bank
    from retrievegan.data.preprocess import PreprocessConfig, preprocess
    from retrievegan.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny_dataset")
    raw_coco, raw_vg = root / "raw/coco", root / "raw/vg"
    generate(SynthConfig(seed=3, num_train=48, num_val=30), raw_coco, raw_vg, progress=False)
    pp = PreprocessConfig(image_size=32, seed=0, num_workers=1)
    data_dir = root / "data/coco_stuff"
    preprocess("coco_stuff", coco_config_for(raw_coco, num_val=8, num_test=12), pp, data_dir, "tiny", progress=False)
    vg_dir = root / "data/visual_genome"
    preprocess(
        "visual_genome",
        vg_config_for(raw_vg, min_object_instances=5, min_attribute_instances=5, min_relationship_instances=3),
        pp,
        vg_dir,
        "tiny",
        progress=False,
    )
    patches_dir = root / "data/patches"
    build_patch_bank(data_dir, PatchConfig(crop_size=16, num_workers=1), patches_dir, progress=False)
    return TinyDataset(
        root=root,
        raw_coco=raw_coco,
        raw_vg=raw_vg,
        data_dir=data_dir,
        vg_data_dir=vg_dir,
        patches_dir=patches_dir,
        image_size=32,
        crop_size=16,
    )


@pytest.fixture(scope="session")
def tiny_sg2im_run(tiny_dataset, tmp_path_factory):
    """A tiny sg2im trained for 4 steps on `tiny_dataset` (checkpoint + snapshots), once per session."""
    from train_support import TINY_SG2IM, TinyRun, train_config

    from retrievegan.train.loop import train

    out_dir = tmp_path_factory.mktemp("tiny_sg2im") / "sg2im"
    result = train("sg2im", TINY_SG2IM, train_config(), tiny_dataset.data_dir, out_dir, progress=False)
    return TinyRun(
        out_dir=out_dir,
        checkpoint=result.checkpoint,
        data_dir=tiny_dataset.data_dir,
        patches_csv=tiny_dataset.patches_dir / "patches.csv",
    )
