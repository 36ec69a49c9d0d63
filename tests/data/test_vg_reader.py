"""Visual Genome reader: sg2im's preprocess_vg thresholds and load-time selection on a hand-built fixture."""

from __future__ import annotations

from conftest import vg_config_for
from rawfixtures import vg_files

from retrievegan.data.vg import normalize_predicate, read_visual_genome


def person_image(image_id, n_people, rels, start_oid, w=300, h=300):
    objects = [(start_oid + i, "person", 10 + 5 * i, 10, 40, 40) for i in range(n_people)]
    return {"id": image_id, "w": w, "h": h, "objects": objects, "relationships": rels}


def build(tmp_path, images, splits, **overrides):
    paths = vg_files(tmp_path, images, splits)
    cfg = vg_config_for(
        tmp_path, min_object_instances=1, min_attribute_instances=1, min_relationship_instances=1, **overrides
    )
    assert cfg.objects == paths["objects"]
    return read_visual_genome(cfg, seed=0)


def simple_splits(train, val, test):
    return {"train": train, "val": val, "test": test}


def test_object_and_relationship_counts(tmp_path):
    images = [
        person_image(1, 3, [(1, "on", 100, 101)], 100),  # kept: 3 objects, 1 rel
        person_image(2, 2, [(2, "on", 200, 201)], 200),  # 2 objects: dropped
        person_image(3, 4, [], 300),  # no relationship: dropped
        person_image(4, 3, [(3, "on", 400, 401)], 400),
        person_image(5, 3, [(4, "on", 500, 501)], 500),
    ]
    splits, vocab, counts = build(tmp_path, images, simple_splits([1, 2, 3], [4], [5]))
    assert [r.graph.image_id for r in splits["train"]] == [1]
    assert counts["train"]["images_dropped_object_count"] == 1
    assert counts["train"]["images_dropped_relationship_count"] == 1
    g = splits["train"][0].graph
    assert g.num_real_objects == 3 and g.objects[-1].category == 0
    assert (0, vocab.predicate_index("on"), 1) in g.triples


def test_orphans_come_after_related_objects_and_are_kept(tmp_path):
    img = person_image(1, 5, [(1, "on", 103, 104)], 100)
    splits, _, _ = build(
        tmp_path,
        [img, person_image(4, 3, [(3, "on", 400, 401)], 400), person_image(5, 3, [(4, "on", 500, 501)], 500)],
        simple_splits([1], [4], [5]),
    )
    g = splits["train"][0].graph
    ids = [o.source_id for o in g.objects[:-1]]
    assert ids[:2] == [103, 104]  # objects in relationships first
    assert sorted(ids[2:]) == [100, 101, 102]  # orphans (no relationship) kept after them
    assert g.triples[0][0] == 0 and g.triples[0][2] == 1


def test_at_most_ten_objects_including_image(tmp_path):
    rels = [(i, "on", 100 + i, 100 + i + 1) for i in range(11)]  # 12 related objects
    img = person_image(1, 14, rels, 100)
    splits, _, _ = build(
        tmp_path,
        [img, person_image(4, 3, [(30, "on", 400, 401)], 400), person_image(5, 3, [(40, "on", 500, 501)], 500)],
        simple_splits([1], [4], [5]),
    )
    g = splits["train"][0].graph
    assert len(g.objects) == 10  # 9 real + __image__ (sg2im's off-by-one would give 11)
    assert all(o.source_id in range(100, 112) for o in g.objects[:-1])  # no orphan while related ones remain
    for s, _, o in g.triples:
        assert 0 <= s < 10 and 0 <= o < 10


def test_aliases_and_predicate_normalisation_in_every_split(tmp_path):
    images = [
        {
            "id": 1,
            "w": 300,
            "h": 300,
            "relationships": [(1, "on", 10, 11)],
            "objects": [(10, "man", 0, 0, 50, 50), (11, "woman", 60, 0, 50, 50), (12, "person", 0, 60, 50, 50)],
        },
        {
            "id": 2,
            "w": 300,
            "h": 300,
            "relationships": [(2, " On Top Of ", 20, 21)],
            "objects": [(20, "person", 0, 0, 50, 50), (21, "person", 60, 0, 50, 50), (22, "man", 0, 60, 50, 50)],
        },
        {
            "id": 3,
            "w": 300,
            "h": 300,
            "relationships": [(3, "ON", 30, 31)],
            "objects": [(30, "person", 0, 0, 50, 50), (31, "person", 60, 0, 50, 50), (32, "man", 0, 60, 50, 50)],
        },
    ]
    splits, vocab, _ = build(tmp_path, images, simple_splits([1], [2], [3]))
    assert vocab.object_names == ("__image__", "person")
    assert vocab.predicate_names == ("__in_image__", "on")
    for name in ("val", "test"):  # sg2im normalised predicates of train only
        g = splits[name][0].graph
        assert [t for t in g.triples if t[1] != 0] == [(0, 1, 1)]
    assert normalize_predicate("  On   Top Of ", {"on top of": "on"}) == "on"


def test_small_objects_and_small_images_dropped(tmp_path):
    images = [
        {
            "id": 1,
            "w": 300,
            "h": 300,
            "relationships": [(1, "on", 10, 11)],
            "objects": [
                (10, "person", 0, 0, 32, 32),
                (11, "person", 60, 0, 40, 40),
                (12, "person", 0, 60, 40, 40),
                (13, "person", 100, 100, 31, 80),
            ],
        },  # 31 px wide: too small
        person_image(2, 3, [(2, "on", 200, 201)], 200, w=199),  # min side 199 < 200
        person_image(4, 3, [(3, "on", 400, 401)], 400),
        person_image(5, 3, [(4, "on", 500, 501)], 500),
    ]
    splits, _, counts = build(tmp_path, images, simple_splits([1, 2], [4], [5]))
    assert [r.graph.image_id for r in splits["train"]] == [1]
    assert counts["train"]["images_dropped_small"] == 1
    assert sorted(o.source_id for o in splits["train"][0].graph.objects[:-1]) == [10, 11, 12]


def test_vocab_thresholds_counted_on_train_only(tmp_path):
    images = [
        {
            "id": 1,
            "w": 300,
            "h": 300,
            "relationships": [(1, "on", 10, 11)],
            "objects": [
                (10, "person", 0, 0, 50, 50),
                (11, "person", 60, 0, 50, 50),
                (12, "car", 0, 60, 50, 50),
                (13, "person", 120, 120, 50, 50),
            ],
        },
        {
            "id": 4,
            "w": 300,
            "h": 300,
            "relationships": [(3, "on", 43, 44)],
            "objects": [
                (40, "tree", 0, 0, 50, 50),
                (41, "tree", 60, 0, 50, 50),
                (42, "tree", 0, 60, 50, 50),
                (43, "person", 0, 120, 50, 50),
                (44, "person", 60, 120, 50, 50),
                (45, "person", 120, 0, 50, 50),
            ],
        },
        person_image(5, 3, [(4, "on", 500, 501)], 500),
    ]
    paths = vg_files(tmp_path, images, simple_splits([1], [4], [5]))
    cfg = vg_config_for(tmp_path, min_object_instances=2, min_attribute_instances=1, min_relationship_instances=1)
    splits, vocab, _ = read_visual_genome(cfg, seed=0)
    assert paths["splits"].endswith("vg_splits.json")
    assert vocab.object_names == ("__image__", "person")  # car: 1 train instance; tree: val only
    assert sorted(o.source_id for o in splits["train"][0].graph.objects[:-1]) == [10, 11, 13]
    val = splits["val"][0].graph
    assert len(val.objects) - 1 == 3  # only the 3 persons survive; the trees are out of vocabulary
