"""Bad input: a clear error naming the file and the record, and no output written."""

from __future__ import annotations

import json

import pytest

from conftest import coco_config_for, vg_config_for
from rawfixtures import coco_pair, standard_image, vg_files
from retrievegan.cli import main as cli_main
from retrievegan.data.preprocess import PreprocessConfig, preprocess
from retrievegan.errors import InputError

PP = PreprocessConfig(image_size=16, seed=0, num_workers=1)


def coco_dataset(root, train_images=None, val_images=None):
    coco_pair(train_images or [standard_image(i, 2) for i in range(1, 4)], root, "train")
    coco_pair(val_images or [standard_image(i, 2) for i in range(10, 14)], root, "val")
    return coco_config_for(root, num_val=2, num_test=2)


def run_coco(tmp_path, cfg):
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        preprocess("coco_stuff", cfg, PP, out, "t", progress=False)
    assert not out.exists() or not any(out.iterdir()), "a failed run must leave no output"
    return str(info.value)


def test_valid_fixture_passes(tmp_path):
    stats = preprocess("coco_stuff", coco_dataset(tmp_path), PP, tmp_path / "out", "t", progress=False)
    assert stats["table_row"]["train"] == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["vocab.json", "stats.json", "run.json"] + [f"{s}{x}" for s in ("train", "val", "test")
                                                   for x in (".json", "_images.npy")])


def test_malformed_json(tmp_path):
    cfg = coco_dataset(tmp_path)
    path = tmp_path / "annotations/instances_train2017.json"
    path.write_text(path.read_text()[:-20])
    msg = run_coco(tmp_path, cfg)
    assert str(path) in msg and "malformed JSON at line 1" in msg


def test_missing_image_file(tmp_path):
    images = [standard_image(1, 2), standard_image(2, 2) | {"no_file": True}, standard_image(3, 2)]
    msg = run_coco(tmp_path, coco_dataset(tmp_path, train_images=images))
    assert "000000000002.png" in msg and "image file not found" in msg and "image id 2" in msg


@pytest.mark.parametrize(("box", "text"), [((90, 10, 30, 30), "outside"), ((10, 10, 0, 30), "zero or negative area"),
                                           ((-5, 10, 30, 30), "outside")])
def test_bad_boxes(tmp_path, box, text):
    bad = standard_image(2, 2)
    bad["things"].append((1, *box))
    msg = run_coco(tmp_path, coco_dataset(tmp_path, train_images=[standard_image(1, 2), bad]))
    assert "instances_train2017.json" in msg and "annotation id" in msg and text in msg


def test_bad_box_can_be_skipped_when_configured(tmp_path):
    bad = standard_image(2, 2)
    bad["things"].append((1, 10, 10, 0, 30))
    cfg = coco_dataset(tmp_path, train_images=[standard_image(1, 2), bad])
    stats = preprocess("coco_stuff", coco_config_for(tmp_path, num_val=2, num_test=2, invalid_boxes="skip"), PP,
                       tmp_path / "out", "t", progress=False)
    assert cfg.invalid_boxes == "error"
    assert stats["filter_counts"]["train2017"]["objects_dropped_invalid_box"] == 1


def test_unknown_category(tmp_path):
    bad = standard_image(2, 2)
    bad["things"].append((99, 10, 10, 30, 30))
    msg = run_coco(tmp_path, coco_dataset(tmp_path, train_images=[standard_image(1, 2), bad]))
    assert "instances_train2017.json" in msg and "unknown category_id 99" in msg and "annotation id" in msg


def test_image_without_annotations(tmp_path):
    empty = {"id": 2, "w": 100, "h": 100, "things": [], "stuff": []}
    msg = run_coco(tmp_path, coco_dataset(tmp_path, train_images=[standard_image(1, 2), empty]))
    assert "stuff_train2017.json" in msg and "image id 2" in msg and "no annotations" in msg


def test_empty_split(tmp_path):
    cfg = coco_dataset(tmp_path, val_images=[standard_image(10, 2), standard_image(11, 0)])
    msg = run_coco(tmp_path, cfg)
    assert "instances_val2017.json" in msg and "num_val + num_test" in msg


def test_vg_empty_split_and_missing_entry(tmp_path):
    img = {"id": 1, "w": 300, "h": 300, "objects": [(1, "person", 0, 0, 50, 50)] * 3, "relationships": []}
    vg_files(tmp_path / "a", [img], {"train": [1], "val": [1], "test": []})
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"vg_splits.json \(test\): the test split is empty"):
        preprocess("visual_genome", vg_config_for(tmp_path / "a"), PP, out, "t", progress=False)
    vg_files(tmp_path / "b", [img | {"no_objects_entry": True}], {"train": [1], "val": [1], "test": [1]})
    with pytest.raises(InputError, match=r"objects.json \(image id 1\): image has no annotations"):
        preprocess("visual_genome", vg_config_for(tmp_path / "b"), PP, out, "t", progress=False)
    assert not out.exists()


def test_vg_box_outside_image(tmp_path):
    img = {"id": 1, "w": 300, "h": 300, "relationships": [(1, "on", 1, 2)],
           "objects": [(1, "person", 0, 0, 50, 50), (2, "person", 280, 0, 50, 50), (3, "person", 0, 60, 50, 50)]}
    vg_files(tmp_path, [img], {"train": [1], "val": [1], "test": [1]})
    with pytest.raises(InputError, match=r"objects.json \(image id 1, object id 2\): box .* outside"):
        preprocess("visual_genome", vg_config_for(tmp_path), PP, tmp_path / "out", "t", progress=False)


def test_cli_reports_error_and_exit_code(tmp_path, capsys):
    cfg = coco_dataset(tmp_path)
    (tmp_path / "annotations/stuff_val2017.json").write_text("{not json")
    params = json.dumps({k: getattr(cfg, k) for k in ("instances_train", "stuff_train", "image_dir_train",
                                                      "instances_val", "stuff_val", "image_dir_val")})
    code = cli_main(["preprocess", "--no-progress", "--source", "coco_stuff", "--dataset", "t", "--params", params,
                     "--out-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "stuff_val2017.json" in err and "malformed JSON" in err
    assert not (tmp_path / "out").exists()
