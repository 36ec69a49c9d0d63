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
        ["vocab.json", "stats.json", "run.json"]
        + [f"{s}{x}" for s in ("train", "val", "test") for x in (".json", "_images.npy")]
    )


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


@pytest.mark.parametrize(
    ("box", "text"),
    [((90, 10, 30, 30), "outside"), ((10, 10, 0, 30), "zero or negative area"), ((-5, 10, 30, 30), "outside")],
)
def test_bad_boxes(tmp_path, box, text):
    bad = standard_image(2, 2)
    bad["things"].append((1, *box))
    msg = run_coco(tmp_path, coco_dataset(tmp_path, train_images=[standard_image(1, 2), bad]))
    assert "instances_train2017.json" in msg and "annotation id" in msg and text in msg


def test_bad_box_can_be_skipped_when_configured(tmp_path):
    bad = standard_image(2, 2)
    bad["things"].append((1, 10, 10, 0, 30))
    cfg = coco_dataset(tmp_path, train_images=[standard_image(1, 2), bad])
    stats = preprocess(
        "coco_stuff",
        coco_config_for(tmp_path, num_val=2, num_test=2, invalid_boxes="skip"),
        PP,
        tmp_path / "out",
        "t",
        progress=False,
    )
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
    img = {
        "id": 1,
        "w": 300,
        "h": 300,
        "relationships": [(1, "on", 1, 2)],
        "objects": [(1, "person", 0, 0, 50, 50), (2, "person", 280, 0, 50, 50), (3, "person", 0, 60, 50, 50)],
    }
    vg_files(tmp_path, [img], {"train": [1], "val": [1], "test": [1]})
    with pytest.raises(InputError, match=r"objects.json \(image id 1, object id 2\): box .* outside"):
        preprocess("visual_genome", vg_config_for(tmp_path), PP, tmp_path / "out", "t", progress=False)


def test_cli_reports_error_and_exit_code(tmp_path, capsys):
    cfg = coco_dataset(tmp_path)
    (tmp_path / "annotations/stuff_val2017.json").write_text("{not json")
    params = json.dumps(
        {
            k: getattr(cfg, k)
            for k in (
                "instances_train",
                "stuff_train",
                "image_dir_train",
                "instances_val",
                "stuff_val",
                "image_dir_val",
            )
        }
    )
    code = cli_main(
        [
            "preprocess",
            "--no-progress",
            "--source",
            "coco_stuff",
            "--dataset",
            "t",
            "--params",
            params,
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "stuff_val2017.json" in err and "malformed JSON" in err
    assert not (tmp_path / "out").exists()


def test_val_filter_error_says_which_filter_emptied_it(tmp_path):
    # val images listed in the stuff file but without stuff annotations: stuff_only drops every one of them
    no_stuff = [dict(standard_image(i, 3), stuff=[]) for i in range(10, 14)]
    msg = run_coco(tmp_path, coco_dataset(tmp_path, val_images=no_stuff))
    assert "only 0 val2017 images pass the filters" in msg
    assert "of 4 val2017 images, 4 have no stuff annotations (stuff_only = True)" in msg


def test_train_split_error_says_why(tmp_path):
    # one person box each: with the two stuff regions 3 objects, but min_objects_per_image = 4 drops them all
    cfg = coco_dataset(tmp_path, train_images=[standard_image(i, 1) for i in range(1, 4)])
    cfg = type(cfg)(**{**cfg.__dict__, "min_objects_per_image": 4})
    msg = run_coco(tmp_path, cfg)
    assert "the train split is empty after filtering" in msg and "instances_train2017.json" in msg
    assert "of 3 train2017 images, 0 have no stuff annotations" in msg
    assert "3 keep fewer than min_objects_per_image = 4" in msg


def test_vg_empty_vocabulary_is_named_as_the_cause(tmp_path):
    img = {
        "id": 1,
        "w": 300,
        "h": 300,
        "objects": [(k, "person", 0, 0, 50, 50) for k in range(1, 4)],
        "relationships": [(1, "on", 1, 2)],
    }
    vg_files(tmp_path / "v", [img], {"train": [1], "val": [1], "test": [1]})
    cfg = vg_config_for(
        tmp_path / "v", min_object_instances=10, min_relationship_instances=1, min_attribute_instances=1
    )
    with pytest.raises(InputError) as info:
        preprocess("visual_genome", cfg, PP, tmp_path / "out", "t", progress=False)
    msg = str(info.value)
    assert "vg_splits.json (train): the train split is empty after filtering" in msg
    assert (
        "the object vocabulary is empty: no object name occurs min_object_instances = 10 times in the train "
        "split (the most frequent, 'person', occurs 3 times)"
    ) in msg
    assert "keep fewer than min_objects_per_image = 3" in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "pickle", "folder"])
def test_one_array_loader_names_the_file(tmp_path, damage):
    import numpy as np

    from retrievegan import io

    path = tmp_path / "a.npy"
    io.save_npy(path, np.zeros((64, 4, 4, 3), np.uint8))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"not an array at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.unlink()
        path.mkdir()
    for mmap in (True, False):
        with pytest.raises(InputError, match=r"a\.npy: not a readable \.npy array"):
            io.load_array(path, mmap=mmap)


def test_array_loader_checks_shape_and_type(tmp_path):
    import numpy as np

    from retrievegan import io

    path = tmp_path / "b.npy"
    io.save_npy(path, np.zeros((5, 4, 4, 3), np.uint8))
    assert io.load_array(path, shape=(5, None, None, 3), dtype=np.uint8).shape == (5, 4, 4, 3)
    with pytest.raises(InputError, match=r"b\.npy: expected a shape \(6, \*, \*, 3\) array, got shape"):
        io.load_array(path, shape=(6, None, None, 3))
    with pytest.raises(InputError, match=r"expected a float32 array"):
        io.load_array(path, dtype=np.float32)
    with pytest.raises(InputError, match=r"c\.npy: run the patches stage"):
        io.load_array(tmp_path / "c.npy", "run the patches stage")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_torch_file_call_sites_raise_input_error(tmp_path, damage):
    import torch

    from retrievegan import io
    from retrievegan.train.loop import load_snapshot

    path = tmp_path / "w.pt"
    torch.save({"format": "x", "networks": {}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage])
    with pytest.raises(InputError, match=r"w\.pt: cannot read the torch file"):
        io.read_torch(path)
    with pytest.raises(InputError, match=r"w\.pt: cannot read the torch file"):
        load_snapshot(path, {})
    with pytest.raises(InputError, match=r"nope\.pt: generator snapshot not found"):
        load_snapshot(tmp_path / "nope.pt", {})
