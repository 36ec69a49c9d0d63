"""COCO-Stuff reader: the sg2im filters on a hand-built fixture, relationships, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import coco_config_for
from rawfixtures import coco_pair, standard_image

from retrievegan.data import geometry
from retrievegan.data.coco import read_split_pair
from retrievegan.data.scene_graph import decode_mask


def read(tmp_path, images, **overrides):
    inst, stuff, image_dir = coco_pair(images, tmp_path)
    cfg = coco_config_for(tmp_path, **overrides)
    kept, vocab, counts = read_split_pair(cfg, str(inst), str(stuff), str(image_dir), None, predicate_seed=0)
    return {raw.graph.image_id: raw.graph for raw in kept}, vocab, counts


def test_object_count_filter_keeps_3_to_8(tmp_path):
    # 2 stuff + n things: n=0 -> 2 objects, 1 -> 3, 6 -> 8, 7 -> 9
    graphs, _, counts = read(tmp_path, [standard_image(i, n) for i, n in ((10, 0), (11, 1), (12, 6), (13, 7))])
    assert sorted(graphs) == [11, 12]
    assert graphs[11].num_real_objects == 3 and graphs[12].num_real_objects == 8
    assert counts["images_dropped_object_count"] == 2


def test_area_exactly_two_percent_is_dropped(tmp_path):
    img = standard_image(20, 2)
    img["things"].append((3, 50, 50, 20, 10))  # 200 / 10000 == 0.02 -> dropped (sg2im keeps > 0.02)
    img["things"].append((3, 70, 70, 20, 10.5))  # 0.021 -> kept
    graphs, vocab, counts = read(tmp_path, [img])
    cats = [vocab.object_names[o.category] for o in graphs[20].objects]
    assert cats.count("car") == 1
    assert counts["objects_dropped_small"] == 1


def test_other_is_dropped_and_not_in_vocab(tmp_path):
    img = standard_image(30, 1)
    img["stuff"].append((183, 10, 10, 50, 50))
    graphs, vocab, counts = read(tmp_path, [img])
    assert "other" not in vocab.object_names
    assert graphs[30].num_real_objects == 3
    assert counts["objects_dropped_other"] == 1
    graphs_other, vocab_other, _ = read(tmp_path / "with_other", [img], include_other=True)
    assert "other" in vocab_other.object_names and graphs_other[30].num_real_objects == 4


def test_stuff_only_drops_images_without_stuff(tmp_path):
    no_stuff = {"id": 41, "w": 100, "h": 100, "things": [(1, 0, 0, 50, 50)] * 3, "stuff": [], "in_stuff": False}
    graphs, _, counts = read(tmp_path, [standard_image(40, 2), no_stuff])
    assert sorted(graphs) == [40]
    assert counts["images_dropped_no_stuff"] == 1


def test_vocab_is_contiguous_and_keeps_coco_ids(tmp_path):
    _, vocab, _ = read(tmp_path, [standard_image(50, 2)])
    assert vocab.object_names[0] == "__image__"
    assert vocab.object_names[1:] == ("person", "car", "grass", "sky-other")
    assert vocab.object_source_ids == (None, 1, 3, 105, 157)
    assert vocab.predicate_names == geometry.COCO_PREDICATES
    assert vocab.num_categories == 4


def test_boxes_masks_and_image_node(tmp_path):
    graphs, vocab, _ = read(tmp_path, [standard_image(60, 1)])
    g = graphs[60]
    person = g.objects[0]
    assert person.box == pytest.approx((0.05, 0.40, 0.13, 0.70))
    assert decode_mask(person.mask, 16).all()  # a box-shaped polygon fills its box
    assert g.objects[-1].category == 0 and g.objects[-1].box == (0.0, 0.0, 1.0, 1.0)
    in_image = [t for t in g.triples if t[1] == 0]
    assert in_image == [(i, 0, 3) for i in range(3)]
    other = [t for t in g.triples if t[1] != 0]
    assert len(other) == 3  # one geometric triple per real object


@pytest.mark.parametrize(
    ("s_center", "o_center", "expected"),
    [
        ((0.1, 0.5), (0.9, 0.5), "left of"),  # theta = pi
        ((0.9, 0.5), (0.1, 0.5), "right of"),  # theta = 0
        ((0.5, 0.1), (0.5, 0.9), "above"),  # theta = -pi/2 (y points down)
        ((0.5, 0.9), (0.5, 0.1), "below"),  # theta = pi/2
        ((0.0, 0.0), (1.0, 1.0), "left of"),  # theta = -3pi/4: "left of" includes it
        ((1.0, 0.0), (0.0, 1.0), "right of"),  # theta = -pi/4: [-pi/4, pi/4) is "right of"
        ((1.0, 1.0), (0.0, 0.0), "below"),  # theta = pi/4: [pi/4, 3pi/4) is "below"
        ((0.0, 1.0), (1.0, 0.0), "left of"),  # theta = 3pi/4: "left of" includes it
    ],
)
def test_angle_rules(s_center, o_center, expected):
    box, other = (0.4, 0.4, 0.6, 0.6), (0.0, 0.0, 0.2, 0.2)  # neither contains the other
    assert geometry.predicate_for(box, other, s_center, o_center) == expected


def test_containment_before_angle():
    big, small, c = (0.1, 0.1, 0.9, 0.9), (0.3, 0.3, 0.5, 0.5), (0.5, 0.5)
    assert geometry.predicate_for(big, small, c, c) == "surrounding"
    assert geometry.predicate_for(small, big, c, c) == "inside"
    touching = (0.1, 0.3, 0.5, 0.5)  # shares an edge: not strictly inside -> angle rule
    assert geometry.predicate_for(touching, big, (0.3, 0.4), (0.5, 0.5)) == "left of"


def test_triples_match_geometry_of_their_boxes():
    rng = np.random.default_rng(0)
    boxes = [(0.0, 0.0, 0.3, 0.3), (0.6, 0.6, 0.9, 0.9), (0.0, 0.6, 0.3, 0.9), (0.6, 0.0, 0.9, 0.3)]
    centers = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    seen = set()
    for _ in range(50):
        triples = geometry.draw_triples(boxes, centers, rng)
        assert len(triples) == len(boxes)
        for s, p, o in triples:
            assert s != o
            assert p == geometry.predicate_for(boxes[s], boxes[o], centers[s], centers[o])
            seen.add(p)
    assert {"left of", "right of", "above", "below"} <= seen


def test_predicates_drawn_once_per_image_seeded(tmp_path):
    images = [standard_image(70 + i, 5) for i in range(6)]
    a, _, _ = read(tmp_path / "a", images)
    b, _, _ = read(tmp_path / "b", images)
    assert all(a[i].triples == b[i].triples for i in a)
    inst, stuff, image_dir = coco_pair(images, tmp_path / "c")
    cfg = coco_config_for(tmp_path / "c")
    kept, _, _ = read_split_pair(cfg, str(inst), str(stuff), str(image_dir), None, predicate_seed=1)
    other_seed = {raw.graph.image_id: raw.graph.triples for raw in kept}
    assert any(other_seed[i] != a[i].triples for i in a)
    # per-image generators: an image's triples do not depend on which other images are in the file
    alone, _, _ = read(tmp_path / "d", images[3:4])
    assert alone[73].triples == a[73].triples
