"""Scene graphs as sentences (AttnGAN's input): hand-written graphs, tokens, truncation, batches."""

from __future__ import annotations

import pytest
import torch

from retrievegan.text import (
    SentenceConfig,
    WordVocab,
    batch_tokens,
    graph_clauses,
    graph_to_sentence,
    tokenize,
)

PREDICATES = ("__in_image__", "left of", "right of", "above", "below", "inside", "surrounding")
LEFT, RIGHT, ABOVE, BELOW, INSIDE, IN_IMAGE = 1, 2, 3, 4, 5, 0


def test_each_relationship_is_a_clause_joined_by_and():
    names = ["circle", "square", "sky", "__image__"]
    triples = [(0, LEFT, 1), (2, ABOVE, 1), (0, IN_IMAGE, 3), (1, IN_IMAGE, 3), (2, IN_IMAGE, 3)]
    assert graph_to_sentence(names, triples, PREDICATES) == "circle left of square and sky above square"


def test_a_graph_without_relationships_lists_its_objects():
    names = ["circle", "sky", "__image__"]
    only_in_image = [(0, IN_IMAGE, 2), (1, IN_IMAGE, 2)]
    assert graph_to_sentence(names, only_in_image, PREDICATES) == "circle and sky"
    assert graph_to_sentence(names, [], PREDICATES) == "circle and sky"
    assert graph_to_sentence(["__image__"], [], PREDICATES) == ""  # nothing to say
    vocab = WordVocab.from_names(["__image__", "circle", "sky"], PREDICATES)
    assert vocab.encode_clauses([], max_words=10) == [1]  # the <empty> token
    assert vocab.decode([1]) == "<empty>"


def test_repeated_categories_keep_their_plain_names():
    names = ["circle", "circle", "square", "__image__"]
    triples = [(0, LEFT, 1), (1, ABOVE, 2), (2, INSIDE, 0)]
    assert (
        graph_to_sentence(names, triples, PREDICATES)
        == "circle left of circle and circle above square and square inside circle"
    )


def test_isolated_objects_are_dropped_or_mentioned():
    names = ["circle", "square", "star", "sky", "__image__"]
    triples = [(0, BELOW, 3), (1, IN_IMAGE, 4), (2, IN_IMAGE, 4)]
    assert graph_clauses(names, triples, PREDICATES) == ["circle below sky"]  # the paper: relationships only
    assert graph_clauses(names, triples, PREDICATES, "mention") == ["circle below sky", "square", "star"]
    with pytest.raises(ValueError, match="isolated_objects"):
        graph_clauses(names, triples, PREDICATES, "keep")


def test_predicates_and_names_with_spaces_or_punctuation_become_words():
    assert tokenize("Left of") == ["left", "of"]
    assert tokenize("wall-brick next to teddy bear") == ["wall", "brick", "next", "to", "teddy", "bear"]
    assert tokenize("snake_case") == ["snake", "case"]
    objects = ("__image__", "teddy bear", "wall-brick", "sky")
    predicates = ("__in_image__", "next to", "on top of")
    vocab = WordVocab.from_names(objects, predicates)
    assert vocab.words == ("and", "bear", "brick", "next", "of", "on", "sky", "teddy", "to", "top", "wall")
    sentence = graph_to_sentence(["teddy bear", "wall-brick", "__image__"], [(0, 2, 1), (1, 1, 0)], predicates)
    assert sentence == "teddy bear on top of wall-brick and wall-brick next to teddy bear"
    ids = vocab.encode_clauses(sentence.split(" and "), max_words=64)
    assert vocab.decode(ids) == "teddy bear on top of wall brick and wall brick next to teddy bear"
    with pytest.raises(KeyError, match="unknown"):
        vocab.index("unknown")


def test_whole_clauses_are_kept_while_they_fit():
    vocab = WordVocab.from_names(("__image__", "circle", "square", "sky"), PREDICATES)
    clauses = ["circle left of square", "sky above circle", "square below sky"]
    assert (
        vocab.decode(vocab.encode_clauses(clauses, 64))
        == "circle left of square and sky above circle and square below sky"
    )
    # 4 + (1 + 3) = 8 words fit in 9, the third clause (1 + 3 more) does not
    assert vocab.decode(vocab.encode_clauses(clauses, 9)) == "circle left of square and sky above circle"
    assert vocab.decode(vocab.encode_clauses(clauses, 2)) == "circle left"  # a first clause is cut
    with pytest.raises(ValueError):
        SentenceConfig(max_words=0)


def test_batch_tokens_match_the_per_graph_sentences(tiny_dataset):
    from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs

    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    spec = ds.spec
    vocab = WordVocab.from_names(spec.object_names, spec.predicate_names)
    items = [ds[i] for i in range(5)]
    batch = collate_scene_graphs(items)
    cfg = SentenceConfig()
    tokens, lengths = batch_tokens(
        batch.objs, batch.triples, batch.obj_to_img, 5, spec.object_names, spec.predicate_names, vocab, cfg
    )
    assert tokens.shape == (5, int(lengths.max())) and tokens.dtype == torch.int64
    for n, item in enumerate(items):
        names = [spec.object_names[c] for c in item.objs.tolist()]
        sentence = graph_to_sentence(names, item.triples.tolist(), spec.predicate_names)
        assert sentence  # every fixture graph has real objects
        assert vocab.decode(tokens[n, : lengths[n]]) == " ".join(tokenize(sentence))
        assert (tokens[n, lengths[n] :] == 0).all() and (tokens[n, : lengths[n]] > 0).all()
