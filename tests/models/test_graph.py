"""Scene-graph convolution: average pooling over edges, checked by hand on small graphs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from retrievegan.models.graph import GraphTripleConv, SceneGraphEncoder, pool_edges
from retrievegan.models.init import build


def test_pool_edges_by_hand():
    # objects 0, 1, 2, 3; triples 0->1, 1->2, 0->2; object 3 is in no triple
    s_idx = torch.tensor([0, 1, 0])
    o_idx = torch.tensor([1, 2, 2])
    subject_cand = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    object_cand = torch.tensor([[4.0, 40.0], [5.0, 50.0], [6.0, 60.0]])
    avg = pool_edges(subject_cand, object_cand, s_idx, o_idx, 4, "avg")
    # object 0: subject of triples 0 and 2 -> (1 + 3) / 2; object 1: subject of t1 (2), object of t0 (4) -> 3;
    # object 2: object of t1 (5) and t2 (6) -> 5.5; object 3: nothing -> 0
    assert avg.tolist() == [[2.0, 20.0], [3.0, 30.0], [5.5, 55.0], [0.0, 0.0]]
    total = pool_edges(subject_cand, object_cand, s_idx, o_idx, 4, "sum")
    assert total.tolist() == [[4.0, 40.0], [6.0, 60.0], [11.0, 110.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="pooling"):
        pool_edges(subject_cand, object_cand, s_idx, o_idx, 4, "max")


def test_layer_averages_neighbours():
    """With g_s / g_o swapped to pass the *other* end's vector and h = identity, each object's new vector is
    the mean of its neighbours' vectors: a hand-checkable layer."""
    layer = GraphTripleConv(input_dim=1, output_dim=1, hidden_dim=1)
    swap = nn.Linear(3, 3, bias=False)  # [v_s, v_p, v_o] -> [g_s = v_o, g_p = v_p, g_o = v_s]
    with torch.no_grad():
        swap.weight.copy_(torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    layer.net1, layer.net2 = swap, nn.Identity()
    obj_vecs = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    pred_vecs = torch.tensor([[0.5], [0.25], [0.125]])
    edges = torch.tensor([[0, 1], [1, 2], [0, 2]])
    new_obj, new_pred = layer(obj_vecs, pred_vecs, edges)
    # 0's neighbours: 1, 2 -> 3; 1's: 0, 2 -> 2.5; 2's: 1, 0 -> 1.5; 3 has none -> 0
    assert new_obj.squeeze(1).tolist() == [3.0, 2.5, 1.5, 0.0]
    assert torch.equal(new_pred, pred_vecs)


def test_encoder_shapes_and_isolated_objects():
    gen = torch.Generator().manual_seed(0)
    enc = build(
        lambda: SceneGraphEncoder(
            num_objects=5, num_predicates=3, embedding_dim=8, gconv_dim=12, hidden_dim=16, num_layers=5
        ),
        gen,
    )
    objs = torch.tensor([1, 2, 0, 3, 4, 0])  # two images of 3 objects
    triples = torch.tensor([[0, 1, 1], [0, 0, 2], [1, 0, 2], [3, 2, 4], [3, 0, 5], [4, 0, 5]])
    obj_vecs, pred_vecs = enc(objs, triples)
    assert obj_vecs.shape == (6, 12) and pred_vecs.shape == (6, 12)
    # the two images share no edge: changing image 2's objects leaves image 1's vectors unchanged
    objs2 = objs.clone()
    objs2[3:5] = torch.tensor([2, 2])
    obj_vecs2, _ = enc(objs2, triples)
    assert torch.equal(obj_vecs[:3], obj_vecs2[:3])
    assert not torch.equal(obj_vecs[3:], obj_vecs2[3:])
    flat = build(lambda: SceneGraphEncoder(5, 3, embedding_dim=8, gconv_dim=12, num_layers=0), gen)
    assert flat(objs, triples)[0].shape == (6, 12)


def test_build_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build(lambda: GraphTripleConv(4, 6, 8), torch.Generator().manual_seed(7))
    b = build(lambda: GraphTripleConv(4, 6, 8), torch.Generator().manual_seed(7))
    c = build(lambda: GraphTripleConv(4, 6, 8), torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    for (_, p), (_, q), (_, r) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(p, q)
        assert not torch.equal(p, r)
    # Kaiming-normal weights (sg2im): std sqrt(2 / fan_in) for the 3 * 4 -> 8 layer
    weight = build(lambda: GraphTripleConv(64, 64, 512), torch.Generator().manual_seed(0)).net1[0].weight
    assert weight.std().item() == pytest.approx((2 / (3 * 64)) ** 0.5, rel=0.05)
