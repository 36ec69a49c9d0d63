"""Differentiable iterative patch retrieval (RetrieveGAN §3.3, Fig. 2b, eq. 1-5; supplement Alg. 1).

Given, for each of the ``N`` objects of an image, ``K`` pre-filtered candidate patches (a *group*) and
their embeddings ``e = E_p(p)`` (an MLP over frozen patch features: :class:`PatchEmbedder`), the module
selects one patch per object, mutually compatible, in ``n`` iterations (``n`` = the image's number of
objects that have a candidate):

1. query ``q`` = the embedding of one randomly chosen valid candidate (or a given query, e.g. a
   ground-truth patch for the GT-selection loss);
2. iteration ``j``: scores ``pi_hat_i = -||q - e_i||_2 + g_i`` with Gumbel noise ``g_i`` (eq. 1),
   relaxed selection ``s^(j) = softmax(pi_hat / tau)`` over the candidates still allowed;
3. group-wise update (full paper eq. 4; the short paper's eq. 2 without groups):
   ``pi_hat_i <- pi_hat_i + log(1 - max_{i' in group(i)} s_i'^(j))`` (max pooling of the selection over
   the group of patch ``i``), which disables the group of a one-hot selection;
4. greedy query update: ``q`` = mean of the features selected so far; the scores are recomputed;
5. relaxed n-hot vector ``s = sum_j s^(j)``.

Modes (``mode``), an explicit choice:

* ``hard`` (straight-through, the default): the forward pass selects ``argmax s^(j)`` (= exact
  Gumbel-max sampling for any ``tau``), disables that group exactly (eq. 4 with a one-hot: the group's
  max is 1, ``log(1 - 1) = -inf``), and uses the one-hot patch; gradients flow through ``s^(j)``
  (``h + (s - stop_grad(s))``). ``weights`` is exactly n-hot in the forward pass.
* ``relaxed``: eq. 4 as written. The penalty ``sum_j log(1 - max_group s^(j))`` is carried across the
  iterations and added to the recomputed scores (after the greedy query update), the temperature
  softmax runs over every candidate (no group is removed), the Gumbel noise is drawn once (eq. 1,
  Alg. 1) and the generator gets the relaxed n-hot vector itself (no straight-through). A soft
  selection only damps its group (``max_group s < 1``), and once the query and the scores change a
  damped group can win again: a group's total mass ``sum_{i in group} s_i`` can exceed 1 while another
  group gets less than 1. :func:`group_masses` measures it (the workflow reports how often it happens).
* ``soft``: the selection mass is used, but with the group-wise disabling made exact for soft
  selections: each group has a capacity ``c_g = 1 - mass already given to it`` and each iteration's
  unit mass is allocated with the constrained softmax of Martins & Kreutzer (2017), ``m_g = min(c_g,
  lambda * W_g)`` with ``W_g = sum_{i in g} exp(pi_hat_i / tau)`` and ``lambda`` such that ``sum_g m_g =
  1`` (within a group the mass is split by the softmax). Identical to the hard rule when the selection
  is one-hot; it guarantees ``0 <= s_i <= 1``, every group's total = 1 and the total = ``n`` (what the
  paper states for ``s``, which ``relaxed`` does not guarantee). As ``tau -> 0`` soft mode becomes hard
  mode.

Noise (``hard`` / ``soft``): fresh Gumbel noise per iteration, from an explicit ``torch.Generator``. With
a fixed query this is the same distribution as Alg. 1's once-drawn noise (Gumbel-top-k = sequential
sampling without replacement, also over groups); with the greedy query update each step is an exact
categorical sample given the current query, which one fixed draw of noise would not give. ``relaxed``
uses the first iteration's draw for every iteration (the literal eq. 1 - 4). All modes consume the same
random draws, so switching the mode changes no other random number of a training step.

Everything is batched over images (``B``) with padding masks; the only Python loop is over the ``n``
iterations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

Mode = Literal["hard", "soft", "relaxed"]
MODES: tuple[str, ...] = ("hard", "soft", "relaxed")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    tau: float = 1.0  # ours (the paper does not state it); the learnt E_p scale sets the effective sharpness
    k: int = 32  # candidates per object used by the retrieval (<= prefilter.k); ours, PasteGAN: 10
    mode: Mode = "hard"  # ours: straight-through (the generator composes real patches, as at test time);
    # relaxed: eq. 4 literally (relaxed n-hot weights, no straight-through); soft: group-capped relaxation
    greedy: bool = True  # paper: query = mean of the selected patch features
    gumbel: bool = True  # paper: Gumbel-max sampling (eq. 1)
    embed_dim: int = 128  # E_p output (ours)
    embed_hidden: int = 256  # E_p hidden width (ours)
    embed_layers: int = 2  # E_p: "a series of fully-connected layers" (supplement); ours: 2

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError("tau must be > 0")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("k", "embed_dim", "embed_hidden", "embed_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class PatchEmbedder(nn.Module):
    """E_p: fully-connected layers over frozen patch features, ``(..., F) -> (..., embed_dim)``.

    ``layers`` Linear layers with ReLU between them (none after the last). Build it with
    ``retrievegan.models.init.build(lambda: PatchEmbedder(...), generator)``.
    """

    def __init__(self, in_dim: int, embed_dim: int = 128, hidden: int = 256, layers: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [embed_dim]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def embed_candidates(
    embedder: nn.Module, features: torch.Tensor | np.ndarray, ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """E_p of a batch's candidates, once per distinct patch and never on padding.

    ``features`` ``(P, F)``: the frozen patch features (a tensor, or a numpy array / memmap read only at
    the rows needed); ``ids`` ``(B, N, K)`` int64 bank rows, ``-1`` padding; ``mask`` ``(B, N, K)`` (default
    ``ids >= 0``). Returns ``(B, N, K, D)`` with zeros at padding. Candidate lists of objects of one
    category overlap, so embedding the distinct patches only saves E_p work.
    """
    mask = ids >= 0 if mask is None else mask.bool()
    uniq, inverse = torch.unique(ids[mask], return_inverse=True)
    if isinstance(features, np.ndarray):
        rows = torch.from_numpy(np.array(features[uniq.cpu().numpy()], dtype=np.float32)).to(ids.device)
    else:
        rows = features[uniq]
    emb = embedder(rows)  # (U, D)
    out = emb.new_zeros(tuple(ids.shape) + (emb.shape[-1],))
    out[mask] = emb[inverse]
    return out


@dataclasses.dataclass
class RetrievalOutput:
    """Result of :func:`iterative_retrieval` for ``B`` images, ``N`` object slots, ``K`` candidates.

    * ``weights`` ``(B, N, K)``: what the generator uses. Hard: one-hot per selected object in the
      forward pass (straight-through gradients); soft: the group-capped relaxed selection (each object's
      row sums to 1); relaxed: the relaxed n-hot vector of eq. 4 (a row may sum to more or less than 1).
      Rows of objects without candidates / padding are 0. Sums to ``num_selected`` per image.
    * ``relaxed`` ``(B, N, K)``: the relaxed n-hot vector ``sum_j s^(j)`` (soft, relaxed: = ``weights``;
      hard: the straight-through surrogate, each ``s^(j)`` over the still-allowed candidates, sums to
      ``n`` but an entry can exceed 1 when its group stays unselected for several iterations).
    * ``probs`` ``(B, N, K)``: each object's selection distribution over its own candidates (hard: the
      softmax of the iteration that selected it, renormalised over its group; soft: = ``weights``;
      relaxed: the row of ``relaxed`` renormalised over its group). For the GT-selection loss.
    * ``index`` ``(B, N)`` int64: the selected candidate column (soft, relaxed: the row's argmax); -1 if
      none.
    * ``step`` ``(B, N)`` int64: the iteration that selected the object (hard; soft, relaxed: -1); -1 if
      none.
    * ``selected`` ``(B, N, D)``: ``sum_k weights * features``, the selected patch embeddings.
    * ``query`` ``(B, D)``: the initial query; ``num_selected`` ``(B,)``: objects with candidates.
    """

    weights: torch.Tensor
    relaxed: torch.Tensor
    probs: torch.Tensor
    index: torch.Tensor
    step: torch.Tensor
    selected: torch.Tensor
    query: torch.Tensor
    num_selected: torch.Tensor

    def select(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``(B, N, K, *rest)`` per candidate (pixels, co-occurrence embeddings...) ->
        ``(B, N, *rest)`` weighted by ``weights`` (hard: exactly the selected candidate's values)."""
        w = self.weights.reshape(self.weights.shape + (1,) * (values.dim() - 3)).to(values.dtype)
        return (w * values).sum(dim=2)


Generators = torch.Generator | Sequence[torch.Generator]


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log u)`` from uniforms ``u`` in [0, 1)."""
    finfo = torch.finfo(u.dtype)
    return -torch.log(-torch.log(u.clamp(min=finfo.tiny, max=1.0 - finfo.eps)))


@dataclasses.dataclass(frozen=True)
class GroupCounts:
    """Host values of a retrieval mask ``(B, N, K)``, per image, so that the retrieval reads nothing from the
    device (a GPU synchronisation each): ``groups`` = objects with at least one candidate (the image's
    iterations), ``span`` = its last object slot with a candidate + 1 (the length of its random draws).
    Made on the host side of a step (``Method.host_prepare``) from the host copy of the mask."""

    groups: tuple[int, ...]
    span: tuple[int, ...]

    @classmethod
    def of(cls, mask: torch.Tensor) -> GroupCounts:
        """From a mask (read on the host: one synchronisation if ``mask`` is on a GPU)."""
        ok = mask.bool().any(-1)
        slots = torch.arange(1, ok.shape[1] + 1, device=ok.device)
        groups, span = torch.stack([ok.sum(1), (ok * slots).amax(-1)]).tolist()
        return cls(tuple(groups), tuple(span))

    @property
    def iterations(self) -> int:
        """The batch's number of retrieval iterations: its largest number of groups."""
        return max(self.groups, default=0)


def draw_randomness(
    generator: Generators, mask: torch.Tensor, dtype: torch.dtype, counts: GroupCounts | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniforms that pick the random initial query ``(B, N * K)`` and the Gumbel noise ``(N, B, N, K)``.

    ``generator``: one ``torch.Generator`` for the batch, or one per image. Per-image generators make an
    image's draws independent of the rest of the batch and of its padding: image ``b`` draws
    ``n_b * K`` uniforms, then ``(n_b, n_b, K)`` for the noise, ``n_b`` = its last object slot with a
    candidate + 1 (unused entries are 0; ``counts.span``, read from ``mask`` when not given).
    """
    b, n, k = mask.shape
    device = mask.device
    if isinstance(generator, torch.Generator):
        pick = torch.rand((b, n * k), generator=generator, device=device)
        noise = _gumbel(torch.rand((n, b, n, k), generator=generator, device=device, dtype=dtype))
        return pick, noise
    if len(generator) != b:
        raise ValueError(f"{len(generator)} generators for {b} images")
    pick = torch.zeros((b, n * k), device=device)
    noise = torch.zeros((n, b, n, k), device=device, dtype=dtype)
    last = (counts or GroupCounts.of(mask)).span  # n_b per image
    for i, (gen, n_b) in enumerate(zip(generator, last)):  # random draws only; the compute is batched
        pick[i, : n_b * k] = torch.rand(n_b * k, generator=gen, device=device)
        noise[:n_b, i, :n_b] = _gumbel(torch.rand((n_b, n_b, k), generator=gen, device=device, dtype=dtype))
    return pick, noise


def random_query(features: torch.Tensor, mask: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """``(B, D)``: the features of the valid candidate with the largest ``pick`` ``(B, N * K)`` uniform
    (a uniformly random valid candidate); zeros for an image without candidates."""
    b, n, k, d = features.shape
    scores = pick.masked_fill(~mask.reshape(b, n * k), -1.0)
    q = features.reshape(b, n * k, d)[torch.arange(b, device=features.device), scores.argmax(dim=1)]
    return q * mask.reshape(b, -1).any(1, keepdim=True).to(q.dtype)


def group_capped_softmax(z: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
    """Constrained softmax with group capacities (Martins & Kreutzer 2017, at the group level).

    ``z`` ``(B, G, K)`` scores (``-inf``: not allowed), ``capacity`` ``(B, G)`` in [0, 1]. Returns ``s``
    ``(B, G, K)`` with group masses ``m_g = min(c_g, lambda * W_g)``, ``W_g = sum_k exp(z_gk)``, ``lambda``
    such that ``sum_g m_g = 1``, split inside a group by ``softmax(z_g)``. Groups that cannot hold mass
    (no allowed entry or capacity 0) get 0. If the usable capacity totals less than 1, every usable group
    is filled to its capacity. Differentiable almost everywhere (w.r.t. ``z`` and ``capacity``).
    """
    b, g, _ = z.shape
    log_w = torch.logsumexp(z, dim=-1)  # (B, G), -inf for groups without allowed entries
    usable = torch.isfinite(log_w) & (capacity > 0)
    cap = torch.where(usable, capacity, 0.0)
    log_w = torch.where(usable, log_w, float("-inf"))
    # saturation threshold of each group in log-lambda: log c_g - log W_g (unusable: -inf, "saturated at 0")
    t = torch.where(usable, torch.log(cap.clamp(min=1e-30)) - torch.where(usable, log_w, 0.0), float("-inf"))
    order = torch.argsort(t.detach(), dim=1)
    t_s, cap_s, log_w_s = t.gather(1, order), cap.gather(1, order), log_w.gather(1, order)
    zeros = torch.zeros((b, 1), dtype=z.dtype, device=z.device)
    r = torch.cat([zeros, cap_s.cumsum(1)], dim=1)  # (B, G+1): capacity of the first m groups
    tail = torch.flip(torch.logcumsumexp(torch.flip(log_w_s, [1]), dim=1), [1])  # log sum_{i >= m} W_(i)
    log_s = torch.cat([tail, torch.full_like(zeros, float("-inf"))], dim=1)  # (B, G+1)
    t_ext = torch.cat([t_s, torch.full_like(zeros, float("inf"))], dim=1)
    with torch.no_grad():  # first m whose lambda does not saturate the (m+1)-th group: m saturated groups
        reach = r + torch.exp(torch.clamp(t_ext + log_s, max=80.0))
        ok = reach >= 1.0
        ok[:, -1] = True
        m_star = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # (B, 1), first True
    r_m = r.gather(1, m_star)
    log_s_m = log_s.gather(1, m_star)
    finite = torch.isfinite(log_s_m)
    log_lam = torch.log((1.0 - r_m).clamp(min=1e-30)) - torch.where(finite, log_s_m, 0.0)
    pos = torch.arange(g, device=z.device)[None, :]
    free = torch.exp(torch.where(finite, log_lam, 0.0) + log_w_s)  # exp(-inf) = 0
    mass_s = torch.where(pos < m_star, cap_s, torch.where(finite, free, 0.0))
    mass = torch.zeros_like(mass_s).scatter(1, order, mass_s)
    mass = torch.minimum(mass, cap)  # float safety
    inner = torch.softmax(torch.where(usable[..., None], z, 0.0), dim=-1)
    inner = torch.where(torch.isfinite(z) & usable[..., None], inner, 0.0)
    return mass[..., None] * inner


def iterative_retrieval(
    features: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 1.0,
    mode: Mode = "hard",
    generator: Generators | None = None,
    query: torch.Tensor | None = None,
    greedy: bool = True,
    gumbel: bool = True,
    noise: torch.Tensor | None = None,
    counts: GroupCounts | None = None,
    loop: Callable[..., tuple[torch.Tensor, ...]] | None = None,
) -> RetrievalOutput:
    """Select one candidate per object for a batch of images (see the module docstring).

    Args:
        features: ``(B, N, K, D)`` candidate embeddings ``E_p(p)`` (padding entries: any values).
        mask: ``(B, N, K)`` bool, a real candidate of a real object.
        tau: softmax temperature (> 0).
        mode: ``hard`` (straight-through), ``soft`` (group-capped) or ``relaxed`` (eq. 4 as written).
        generator: ``torch.Generator`` on the features' device for the Gumbel noise and the random
            initial query, or one generator per image (results independent of the batch, see
            :func:`draw_randomness`); required unless ``noise`` / ``query`` are given or ``gumbel`` is False.
        query: ``(B, D)`` initial query (e.g. a ground-truth patch embedding); None: a random candidate.
        greedy: update the query to the mean of the selected features after every iteration.
        gumbel: add Gumbel noise (False: deterministic, the most similar patches).
        noise: ``(N, B, N, K)`` Gumbel noise per iteration, instead of drawing it (for tests/references).
        counts: the mask's per-image host values (:class:`GroupCounts`, from the batch's host side): the
            retrieval then reads nothing from the device; None: read from ``mask`` (one synchronisation on a GPU).
        loop: :func:`retrieval_loop` or a ``torch.compile`` of it (None: the function itself). The random draws
            (per-image generators) stay outside it, so a compiled loop has no graph break.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if tau <= 0:
        raise ValueError("tau must be > 0")
    b, n, k, d = features.shape
    if mask.shape != (b, n, k):
        raise ValueError(f"mask must be {(b, n, k)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    features = torch.where(mask[..., None], features, torch.zeros_like(features))  # padding: any values, even NaN
    if (gumbel and noise is None) or query is None:
        if generator is None:
            raise ValueError("an explicit torch.Generator is required for the noise / the random query")
    counts = counts or GroupCounts.of(mask)
    if generator is not None and (query is None or (gumbel and noise is None)):
        pick, drawn = draw_randomness(generator, mask, features.dtype, counts)
        noise = drawn if noise is None else noise
        if query is None:
            query = random_query(features, mask, pick)
    weights, relaxed, probs, index, step, selected, num_sel = (loop or retrieval_loop)(
        features, mask, query, noise, tau, mode, greedy, gumbel, counts.iterations
    )
    return RetrievalOutput(
        weights=weights,
        relaxed=relaxed,
        probs=probs,
        index=index,
        step=step,
        selected=selected,
        query=query,
        num_selected=num_sel,
    )


def retrieval_loop(
    features: torch.Tensor,
    mask: torch.Tensor,
    query: torch.Tensor,
    noise: torch.Tensor | None,
    tau: float,
    mode: Mode,
    greedy: bool,
    gumbel: bool,
    iterations: int,
) -> tuple[torch.Tensor, ...]:
    """The iterations of :func:`iterative_retrieval` on its checked inputs: ``features`` ``(B, N, K, D)`` with zeros
    at padding, ``mask`` ``(B, N, K)`` bool, ``query`` ``(B, D)``, ``noise`` ``(N, B, N, K)`` (when ``gumbel``),
    ``iterations`` the images' largest number of groups (a host int). Returns :class:`RetrievalOutput`'s
    ``weights, relaxed, probs, index, step, selected, num_selected`` (no random draws, no host reads: it compiles
    without a graph break)."""
    b, n, k, d = features.shape
    device, dtype = features.device, features.dtype
    group_ok = mask.any(dim=-1)  # (B, N) objects that can be retrieved
    num_sel = group_ok.sum(dim=1)  # (B,)
    flat_mask = mask.reshape(b, n * k)
    flat_feats = features.reshape(b, n * k, d)
    neg_inf = float("-inf")

    q = query
    q_sum = torch.zeros_like(query)
    nhot = features.new_zeros((b, n, k))
    relaxed = features.new_zeros((b, n, k))
    probs = features.new_zeros((b, n, k))
    step = torch.full((b, n), -1, dtype=torch.long, device=device)
    disabled = torch.zeros((b, n), dtype=torch.bool, device=device)  # hard mode
    capacity = group_ok.to(dtype)  # soft mode
    penalty = features.new_zeros((b, n, 1))  # relaxed mode: sum_j log(1 - max_group s^(j)), carried (eq. 4)
    saturated = 1.0 - 8 * torch.finfo(dtype).eps  # relaxed: log(1 - m) stays finite (gradients too)
    for j in range(iterations):  # the images' largest number of groups, a host value
        active = j < num_sel  # (B,)
        act = active.to(dtype)
        # exact L2 (no matrix-product cancellation; zero gradient at distance 0), (B, N, K)
        dist = torch.cdist(q[:, None, :], flat_feats, compute_mode="donot_use_mm_for_euclid_dist").reshape(b, n, k)
        scores = -dist
        if gumbel:
            scores = scores + (noise[0] if mode == "relaxed" else noise[j])  # relaxed: eq. 1's one draw
        z = scores / tau
        if mode == "hard":
            allowed = (mask & ~disabled[..., None]).reshape(b, n * k)
            zf = torch.where(allowed, z.reshape(b, n * k), neg_inf)
            zf = torch.where(active[:, None], zf, 0.0)  # inactive rows: finite, zeroed below
            s = torch.softmax(zf, dim=1) * act[:, None]  # (B, N*K)
            pick = zf.argmax(dim=1)  # (B,)
            h = torch.zeros_like(s).scatter(1, pick[:, None], 1.0) * act[:, None]
            st = h + (s - s.detach())  # forward: exactly h
            h3, s3 = h.reshape(b, n, k), s.reshape(b, n, k)
            newly = h3.amax(dim=-1) > 0  # eq. 4: max pooling of the selection over each group
            disabled = disabled | newly
            cond = s3 / s3.sum(-1, keepdim=True).clamp(min=1e-30)
            probs = torch.where(newly[..., None], cond, probs)
            step = torch.where(newly, j, step)
            sel_w = st.reshape(b, n, k)
            nhot = nhot + sel_w
            relaxed = relaxed + s3
        elif mode == "relaxed":
            zf = torch.where(flat_mask, (z + penalty / tau).reshape(b, n * k), neg_inf)
            zf = torch.where(active[:, None], zf, 0.0)  # inactive rows: finite, zeroed below
            s3 = (torch.softmax(zf, dim=1) * act[:, None]).reshape(b, n, k)
            group_max = s3.amax(dim=-1, keepdim=True)  # (B, N, 1): max pooling over the group (eq. 4)
            penalty = penalty + torch.log1p(-group_max.clamp(max=saturated))
            sel_w = s3
            nhot = nhot + s3
            relaxed = relaxed + s3
        else:
            z3 = torch.where(mask, z, neg_inf)
            s3 = group_capped_softmax(z3, capacity) * act[:, None, None]
            capacity = (capacity - s3.sum(-1)).clamp(min=0.0)
            sel_w = s3
            nhot = nhot + s3
            relaxed = relaxed + s3
        f_sel = torch.bmm(sel_w.reshape(b, 1, n * k), flat_feats)[:, 0]  # (B, D)
        if greedy:
            q_sum = q_sum + f_sel * act[:, None]
            q = torch.where(active[:, None], q_sum / (j + 1), q)
    if mode == "hard":
        weights = nhot
        index = torch.where(group_ok, nhot.detach().argmax(-1), -1)
    elif mode == "relaxed":
        weights = relaxed
        probs = relaxed / relaxed.sum(-1, keepdim=True).clamp(min=1e-30)
        index = torch.where(group_ok, relaxed.detach().argmax(-1), -1)
    else:
        weights = relaxed
        probs = relaxed
        index = torch.where(group_ok, relaxed.detach().argmax(-1), -1)
    selected = torch.einsum("bnk,bnkd->bnd", weights, features)
    return weights, relaxed, probs, index, step, selected, num_sel


def gt_selection_loss(
    out: RetrievalOutput, gt_position: torch.Tensor, include: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Ground-truth selection loss: ``-log probs[gt]`` averaged over the ``include`` objects.

    ``gt_position`` ``(B, N)`` int64 column of each object's ground-truth patch among its candidates
    (:func:`retrievegan.embed.prefilter.add_ground_truth`); ``include`` ``(B, N)`` bool: the objects to
    score (the paper: every object except the one whose GT patch is the query). 0 if none.
    """
    include = include & (gt_position >= 0)
    p = out.probs.gather(2, gt_position.clamp(min=0)[..., None]).squeeze(2)
    nll = -torch.log(p.clamp(min=eps))
    return (nll * include).sum() / include.sum().clamp(min=1)


OccurForm = Literal["sum", "mean"]
OCCUR_FORMS: tuple[str, ...] = ("sum", "mean")


def cooccurrence_loss(
    embeddings: torch.Tensor, valid: torch.Tensor, form: OccurForm = "sum", eps: float = 1e-12
) -> torch.Tensor:
    """L_occur^sel: pairwise L2 distances between the selected patches in the co-occurrence space.

    ``embeddings`` ``(B, N, E)`` (e.g. ``out.select(cooccur_emb[candidate_ids])``), ``valid`` ``(B, N)`` bool.
    Per image, over the ordered pairs ``(i, j)``, ``i != j``, of its valid objects:

    * ``sum`` (paper eq. 3 / full paper eq. 5, ``sum_{i,j} d(F(p_i), F(p_j))``; its weight 0.001 is for this
      sum): the sum of the distances (an image with n objects has n (n - 1) terms, 56 for 8 objects);
    * ``mean`` (the earlier implementation, kept as an option): the mean over the image's pairs.

    Then the mean over the images of the batch with >= 2 valid objects (0 if none): the batch mean is ours
    (the paper does not say how images are combined; a mean keeps the weight independent of the batch size).
    """
    if form not in OCCUR_FORMS:
        raise ValueError(f"form must be one of {OCCUR_FORMS}, got {form!r}")
    diff = embeddings[:, :, None, :] - embeddings[:, None, :, :]
    dist = torch.sqrt((diff**2).sum(-1) + eps)  # (B, N, N)
    n = embeddings.shape[1]
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=valid.device)
    per_image = (dist * pair).sum((1, 2))
    if form == "mean":
        per_image = per_image / pair.sum((1, 2)).clamp(min=1)
    has = pair.any(2).any(1)
    return (per_image * has).sum() / has.sum().clamp(min=1)


def group_masses(relaxed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, N)``: the total relaxed selection mass ``sum_k relaxed[b, n, k]`` of every group (object with
    at least one candidate), NaN for objects without candidates and padding.

    ``relaxed`` ``(B, N, K)`` (:attr:`RetrievalOutput.relaxed`), ``mask`` ``(B, N, K)``. Every group gets
    exactly 1 in ``hard`` (forward pass) and ``soft`` mode; in ``relaxed`` mode (eq. 4 as written) a group
    can get more than 1 (and another one less), which is why ``soft`` exists.
    """
    mask = mask.bool()
    mass = (relaxed.detach() * mask).sum(-1)
    return torch.where(mask.any(-1), mass, torch.full_like(mass, float("nan")))
