"""Scene-graph convolution (sg2im; RetrieveGAN's scene-graph encoder E is the same 5-layer network).

For every triple ``(s, p, o)`` a layer feeds the concatenation ``[v_s, v_p, v_o]`` through an MLP whose
output splits into three parts: the subject candidate ``g_s`` (H), the new predicate vector ``g_p``
(Dout) and the object candidate ``g_o`` (H) -- sg2im's g_s, g_p, g_o as one network with a shared
hidden layer. Each object's candidates (from the triples where it is subject and where it is object)
are averaged (or summed), and a second MLP ``h`` maps the pooled (H) vector to the new object vector
(Dout). Objects in no triple pool to zero.
"""

from __future__ import annotations

import torch
from torch import nn

from retrievegan.models.layers import mlp

POOLINGS = ("avg", "sum")


def edge_counts(s_idx: torch.Tensor, o_idx: torch.Tensor, num_objects: int, dtype: torch.dtype) -> torch.Tensor:
    """(num_objects, 1): how many candidates average-pooling divides each object's sum by (>= 1). The same for
    every layer of a graph: compute it once per forward and pass it to :func:`pool_edges`."""
    ones = torch.ones(s_idx.shape[0], dtype=dtype, device=s_idx.device)
    counts = (
        torch.zeros(num_objects, dtype=dtype, device=s_idx.device).index_add(0, s_idx, ones).index_add(0, o_idx, ones)
    )
    return counts.clamp(min=1).unsqueeze(1)


def pool_edges(
    subject_vecs: torch.Tensor,
    object_vecs: torch.Tensor,
    s_idx: torch.Tensor,
    o_idx: torch.Tensor,
    num_objects: int,
    pooling: str = "avg",
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool per-triple candidate vectors onto objects.

    subject_vecs, object_vecs: (T, H) candidates for the subject / object of each triple.
    s_idx, o_idx: (T,) int64 object indices. Returns (num_objects, H): for each object the mean (or sum)
    of every candidate addressed to it; zero for objects in no triple. ``counts``: :func:`edge_counts` (else
    computed here).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    hidden = subject_vecs.shape[1]
    pooled = subject_vecs.new_zeros(num_objects, hidden)
    pooled = pooled.index_add(0, s_idx, subject_vecs).index_add(0, o_idx, object_vecs)
    if pooling == "avg":
        if counts is None or counts.dtype != subject_vecs.dtype:
            counts = edge_counts(s_idx, o_idx, num_objects, subject_vecs.dtype)
        pooled = pooled / counts
    return pooled


class GraphTripleConv(nn.Module):
    """One scene-graph convolution layer.

    obj_vecs: (O, Din), pred_vecs: (T, Din), edges: (T, 2) int64 ``[s, o]`` ->
    new obj_vecs (O, Dout), new pred_vecs (T, Dout).
    """

    kaiming_normal_init = True  # sg2im initialises these MLPs with Kaiming-normal weights

    def __init__(
        self,
        input_dim: int,
        output_dim: int | None = None,
        hidden_dim: int = 512,
        pooling: str = "avg",
        mlp_normalization: str = "none",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.input_dim = input_dim
        self.output_dim = input_dim if output_dim is None else output_dim
        self.hidden_dim = hidden_dim
        self.pooling = pooling
        # net1 = [g_s | g_p | g_o] over [v_s, v_p, v_o]; net2 = h over the pooled candidates
        self.net1 = mlp([3 * input_dim, hidden_dim, 2 * hidden_dim + self.output_dim], normalization=mlp_normalization)
        self.net2 = mlp([hidden_dim, hidden_dim, self.output_dim], normalization=mlp_normalization)

    def forward(
        self, obj_vecs: torch.Tensor, pred_vecs: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s_idx, o_idx = edges[:, 0], edges[:, 1]
        hidden, d_out = self.hidden_dim, self.output_dim
        triple_vecs = self.net1(torch.cat([obj_vecs[s_idx], pred_vecs, obj_vecs[o_idx]], dim=1))
        subject_cand = triple_vecs[:, :hidden]
        new_pred_vecs = triple_vecs[:, hidden : hidden + d_out]
        object_cand = triple_vecs[:, hidden + d_out :]
        pooled = pool_edges(subject_cand, object_cand, s_idx, o_idx, obj_vecs.shape[0], self.pooling, counts)
        return self.net2(pooled), new_pred_vecs


class GraphTripleConvNet(nn.Module):
    """``num_layers`` GraphTripleConv layers of constant width: (O, D), (T, D), (T, 2) -> (O, D), (T, D)."""

    def __init__(
        self,
        dim: int,
        num_layers: int = 5,
        hidden_dim: int = 512,
        pooling: str = "avg",
        mlp_normalization: str = "none",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            GraphTripleConv(dim, dim, hidden_dim, pooling, mlp_normalization) for _ in range(num_layers)
        )

    def forward(
        self, obj_vecs: torch.Tensor, pred_vecs: torch.Tensor, edges: torch.Tensor, counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            obj_vecs, pred_vecs = layer(obj_vecs, pred_vecs, edges, counts)
        return obj_vecs, pred_vecs


class SceneGraphEncoder(nn.Module):
    """Embeddings + ``num_layers`` graph convolutions (sg2im's front end; RetrieveGAN's encoder E).

    objs: (O,) int64 vocab indices, triples: (T, 3) int64 ``(s, p, o)`` over the batch's objects ->
    obj_vecs (O, D), pred_vecs (T, D) with D = ``gconv_dim``. With ``num_layers == 0`` the object
    embeddings go through one linear layer and the predicate embeddings are returned unchanged.
    """

    def __init__(
        self,
        num_objects: int,
        num_predicates: int,
        embedding_dim: int = 128,
        gconv_dim: int = 128,
        hidden_dim: int = 512,
        num_layers: int = 5,
        pooling: str = "avg",
        mlp_normalization: str = "none",
    ):
        super().__init__()
        if num_layers < 0:
            raise ValueError("num_layers must be >= 0")
        self.output_dim = gconv_dim
        self.obj_embeddings = nn.Embedding(num_objects, embedding_dim)
        self.pred_embeddings = nn.Embedding(num_predicates, embedding_dim)
        self.first: nn.Module
        if num_layers == 0:
            self.first = nn.Linear(embedding_dim, gconv_dim)
        else:
            self.first = GraphTripleConv(embedding_dim, gconv_dim, hidden_dim, pooling, mlp_normalization)
        self.rest = GraphTripleConvNet(gconv_dim, max(num_layers - 1, 0), hidden_dim, pooling, mlp_normalization)

    def forward(self, objs: torch.Tensor, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        edges = triples[:, [0, 2]]
        obj_vecs = self.obj_embeddings(objs)
        pred_vecs = self.pred_embeddings(triples[:, 1])
        if isinstance(self.first, nn.Linear):
            return self.first(obj_vecs), pred_vecs
        counts = edge_counts(edges[:, 0], edges[:, 1], objs.shape[0], obj_vecs.dtype)  # shared by every layer
        obj_vecs, pred_vecs = self.first(obj_vecs, pred_vecs, edges, counts)
        return self.rest(obj_vecs, pred_vecs, edges, counts)
