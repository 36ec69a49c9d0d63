"""The training data pipeline: items, patch ids, collation into batched graphs, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from retrievegan.data.dataset import IMAGENET_MEAN, IMAGENET_STD, SceneGraphDataset, collate_scene_graphs, to_uint8
from retrievegan.data.scene_graph import decode_mask, read_split
from retrievegan.errors import InputError
from retrievegan.seeds import derive_seed, image_generators


def test_item_matches_the_canonical_files(tiny_dataset):
    data_dir = tiny_dataset.data_dir
    ds = SceneGraphDataset(data_dir, "val", tiny_dataset.patches_dir / "patches.csv")
    graphs = read_split(data_dir / "val.json").graphs
    pixels = np.load(data_dir / "val_images.npy")
    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    assert len(ds) == len(graphs) and ds.spec.image_size == 32 and ds.spec.mask_size == 16
    for index in (0, len(ds) - 1):
        item, graph = ds[index], graphs[index]
        assert item.image_id == graph.image_id and item.image_index == index
        expected = (pixels[index] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        assert np.allclose(item.image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
        assert np.array_equal(to_uint8(item.image[None])[0], pixels[index])  # normalisation round-trips
        assert item.objs.tolist() == [o.category for o in graph.objects] and item.objs[-1] == 0
        assert torch.allclose(item.boxes, torch.tensor([o.box for o in graph.objects]))
        assert item.triples.tolist() == [list(t) for t in graph.triples]
        assert np.array_equal(item.masks[0].numpy(), decode_mask(graph.objects[0].mask, 16))
        # every real object's patch-bank row: same image, same position, same category
        assert item.patch_ids[-1] == -1
        rows = table.iloc[item.patch_ids[:-1].numpy()]
        assert (rows["split"] == "val").all() and (rows["image_id"] == graph.image_id).all()
        assert rows["object_index"].tolist() == list(range(graph.num_real_objects))
        assert rows["category"].tolist() == item.objs[:-1].tolist()


def test_collate_concatenates_graphs(tiny_dataset):
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train", tiny_dataset.patches_dir / "patches.csv")
    items = [ds[i] for i in (3, 0, 7)]
    batch = collate_scene_graphs(items)
    sizes = [len(it.objs) for it in items]
    assert batch.images.shape == (3, 3, 32, 32) and batch.objs.shape == (sum(sizes),)
    assert batch.masks.shape == (sum(sizes), 16, 16)
    assert batch.obj_to_img.tolist() == sum(([i] * n for i, n in enumerate(sizes)), [])
    assert batch.object_index.tolist() == sum((list(range(n)) for n in sizes), [])
    assert batch.image_ids.tolist() == [it.image_id for it in items]
    assert batch.image_index.tolist() == [3, 0, 7]
    # a triple of image i refers to objects of image i, and maps back to the item's own triple
    offset = 0
    for i, item in enumerate(items):
        mine = batch.triples[batch.triple_to_img == i]
        assert torch.equal(mine[:, [0, 2]] - offset, item.triples[:, [0, 2]])
        assert torch.equal(mine[:, 1], item.triples[:, 1])
        assert (batch.obj_to_img[mine[:, 0]] == i).all() and (batch.obj_to_img[mine[:, 2]] == i).all()
        offset += len(item.objs)
    assert batch.real_objects.sum() == sum(sizes) - 3
    assert torch.equal(batch.patch_ids, torch.cat([it.patch_ids for it in items]))


def test_loader_with_workers_gives_the_same_batches(tiny_dataset):
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    kwargs = dict(batch_size=5, collate_fn=collate_scene_graphs)
    a = list(torch.utils.data.DataLoader(ds, num_workers=0, **kwargs))
    b = list(torch.utils.data.DataLoader(ds, num_workers=2, **kwargs))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and torch.equal(x.triples, y.triples)


def test_seeds_are_per_image():
    assert derive_seed(0, 5) == derive_seed(0, 5) != derive_seed(0, 6) != derive_seed(1, 5)
    gens = image_generators((1, 2), [10, 11, 10])
    draws = [torch.randn(3, generator=g) for g in gens]
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    with pytest.raises(ValueError):
        derive_seed(-1)


def test_bad_input_names_the_file(tiny_dataset, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_dataset.data_dir, data_dir)
    np.save(data_dir / "val_images.npy", np.zeros((3, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="val_images.npy.*3 images but val.json has"):
        SceneGraphDataset(data_dir, "val")
    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    table.loc[table["split"] == "train", "object_index"] = 0
    bad_csv = tmp_path / "patches.csv"
    table.to_csv(bad_csv, index=False)
    with pytest.raises(InputError, match=r"patches.csv \(patch_id \d+\).*does not match train.json"):
        SceneGraphDataset(tiny_dataset.data_dir, "train", bad_csv)
    with pytest.raises(InputError, match="not found"):
        SceneGraphDataset(tiny_dataset.data_dir, "train", tmp_path / "missing.csv")
