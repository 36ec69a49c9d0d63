"""Differentiable iterative retrieval (retrievegan.models.retrieval): properties, sampling law, eq. 4 as
written (relaxed mode) against a one-image reference, group masses, and direction tests (a gradient step on
L_gt_sel / L_occur_sel moves the retrieval the right way; a planted compatible set is recovered)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from retrievegan.models.init import build
from retrievegan.models.retrieval import (
    GroupCounts,
    PatchEmbedder,
    cooccurrence_loss,
    embed_candidates,
    group_capped_softmax,
    group_masses,
    gt_selection_loss,
    iterative_retrieval,
)

F64 = torch.float64
STRENGTH = 3.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(seed: int, b: int, n: int, k: int, d: int, p_valid: float = 0.7):
    g = _gen(seed)
    feats = torch.randn(b, n, k, d, generator=g, dtype=F64) * 2.0
    mask = torch.rand(b, n, k, generator=g) < p_valid
    # variable object counts: padding object slots at the end of some images
    num_obj = torch.randint(0, n + 1, (b,), generator=g)
    mask &= (torch.arange(n)[None, :] < num_obj[:, None])[..., None]
    return feats, mask


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(1, 4),
    n=st.integers(1, 5),
    k=st.integers(1, 6),
    d=st.integers(1, 4),
    tau=st.sampled_from([0.05, 0.3, 1.0, 5.0]),
    mode=st.sampled_from(["hard", "soft", "relaxed"]),
    greedy=st.booleans(),
)
def test_relaxed_n_hot_properties(seed, b, n, k, d, tau, mode, greedy):
    feats, mask = _random_batch(seed, b, n, k, d)
    out = iterative_retrieval(feats, mask, tau=tau, mode=mode, generator=_gen(seed + 1), greedy=greedy)
    w = out.weights.detach()
    group_ok = mask.any(-1)
    n_sel = group_ok.sum(1)
    assert torch.equal(out.num_selected, n_sel)
    # sums to n (the number of objects that have candidates), every entry in [0, 1]
    assert torch.allclose(w.sum((1, 2)), n_sel.to(F64), atol=1e-9)
    assert w.min() >= 0.0
    assert torch.all(w[~mask] == 0)  # nothing for padding objects or padding candidates
    masses = group_masses(out.weights, mask)  # what the generator gets (hard: the forward one-hot)
    assert torch.isnan(masses[~group_ok]).all() and not torch.isnan(masses[group_ok]).any()
    if mode != "relaxed":  # one unit per retrievable object (relaxed: eq. 4 does not guarantee it)
        assert w.max() <= 1.0 + 1e-9
        assert torch.allclose(w.sum(-1), group_ok.to(F64), atol=1e-9)
        assert torch.allclose(masses[group_ok], torch.ones_like(masses[group_ok]), atol=1e-9)
    # the selected index is a real candidate; -1 for objects without any
    idx = out.index
    assert torch.all(idx[~group_ok] == -1)
    bb, nn_ = torch.nonzero(group_ok, as_tuple=True)
    assert torch.all(mask[bb, nn_, idx[bb, nn_]])
    probs = out.probs.detach()
    assert torch.allclose(probs.sum(-1)[group_ok], torch.ones(int(group_ok.sum()), dtype=F64), atol=1e-9)
    if mode == "hard":
        # exactly one patch per group (at most one, and every retrievable object gets one)
        assert torch.all((w == 0) | (w == 1))
        assert torch.equal((w > 0).sum(-1), group_ok.long())
        assert torch.equal(w.argmax(-1)[group_ok], idx[group_ok])
        expected = feats[bb, nn_, idx[bb, nn_]]
        assert torch.allclose(out.selected[bb, nn_], expected, atol=1e-12)
        for i in range(b):  # each iteration selects exactly one object
            s = out.step[i][group_ok[i]]
            assert sorted(s.tolist()) == list(range(int(n_sel[i])))
    else:
        assert torch.allclose(out.relaxed, out.weights)
        assert torch.all(out.step == -1)
        if mode == "soft":
            assert out.relaxed.max() <= 1.0 + 1e-9


def test_padding_is_never_selected_even_when_it_would_win():
    """Padding candidates sit exactly on the query (distance 0) and hold NaN features: never chosen."""
    g = _gen(0)
    b, n, k, d = 64, 4, 5, 3
    feats = torch.randn(b, n, k, d, generator=g, dtype=F64) * 5
    mask = torch.ones(b, n, k, dtype=torch.bool)
    mask[:, :, 0] = False  # column 0 is padding everywhere
    mask[:, 3] = False  # object slot 3 is a padding object
    query = feats[:, 0, 0].clone()  # the padding candidate's own features: it would be the best match
    feats[:, :, 0] = float("nan")
    for mode in ("hard", "soft", "relaxed"):
        out = iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=_gen(1), query=query)
        assert torch.isfinite(out.weights).all() and torch.isfinite(out.selected[:, :3]).all()
        assert torch.all(out.weights[:, :, 0] == 0) and torch.all(out.weights[:, 3] == 0)
        assert torch.all(out.index[:, 3] == -1) and torch.all(out.index[:, :3] > 0)


def _counts(positions: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(positions, minlength=size)


def test_selection_frequencies_match_gumbel_max_sampling():
    """Hard mode draws the first patch from softmax(-||q - e||) over all valid candidates (chi-square),
    and the second one, after the greedy update q = e_first, from softmax(-||e_first - e||) over the
    other groups."""
    gen = _gen(123)
    n, k, d, draws = 3, 4, 2, 40_000
    base = torch.randn(n, k, d, generator=gen, dtype=F64)
    base_mask = torch.ones(n, k, dtype=torch.bool)
    base_mask[2, 3] = False
    q0 = torch.tensor([0.3, -0.2], dtype=F64)
    feats = base.expand(draws, n, k, d)
    mask = base_mask.expand(draws, n, k)
    out = iterative_retrieval(
        feats, mask, tau=0.7, mode="hard", generator=_gen(7), query=q0.expand(draws, d), greedy=True
    )
    flat_valid = base_mask.reshape(-1).numpy()
    logits = -(base - q0).norm(dim=-1).reshape(-1).numpy()

    def softmax_over(valid: np.ndarray, lg: np.ndarray, scale: float = 1.0) -> np.ndarray:
        p = np.where(valid, np.exp(scale * (lg - lg[valid].max())), 0.0)
        return p / p.sum()

    first_group = (out.step == 0).long().argmax(1)  # (draws,)
    first_pos = (first_group * k + out.index.gather(1, first_group[:, None]).squeeze(1)).numpy()
    counts = _counts(first_pos, n * k)
    expected = softmax_over(flat_valid, logits) * draws
    assert counts[~flat_valid].sum() == 0
    assert chisquare(counts[flat_valid], expected[flat_valid]).pvalue > 1e-3
    # the test has power: a wrong law (temperature 2) is rejected
    wrong = softmax_over(flat_valid, logits, scale=2.0) * draws
    assert chisquare(counts[flat_valid], wrong[flat_valid]).pvalue < 1e-6

    # conditional law of the second pick given the most frequent first pick
    a = int(np.argmax(counts))
    rows = torch.from_numpy(first_pos == a)
    second_group = (out.step[rows] == 1).long().argmax(1)
    second_pos = (second_group * k + out.index[rows].gather(1, second_group[:, None]).squeeze(1)).numpy()
    e_a = base.reshape(-1, d)[a]
    valid2 = flat_valid.copy()
    valid2[(a // k) * k : (a // k + 1) * k] = False  # the first pick's group is disabled
    logits2 = -(base.reshape(-1, d) - e_a).norm(dim=-1).numpy()
    counts2 = _counts(second_pos, n * k)
    exp2 = softmax_over(valid2, logits2) * int(rows.sum())
    assert counts2[~valid2].sum() == 0
    assert chisquare(counts2[valid2], exp2[valid2]).pvalue > 1e-3


def test_soft_mode_tends_to_exact_gumbel_max_as_tau_goes_to_zero():
    gen = _gen(5)
    k, d, draws = 6, 3, 20_000
    base = torch.randn(1, k, d, generator=gen, dtype=F64)
    q0 = torch.zeros(d, dtype=F64)
    mask = torch.ones(draws, 1, k, dtype=torch.bool)
    out = iterative_retrieval(
        base.expand(draws, 1, k, d), mask, tau=1e-3, mode="soft", generator=_gen(9), query=q0.expand(draws, d)
    )
    w = out.weights[:, 0]
    assert (w.max(-1).values > 0.99).float().mean() > 0.99  # (nearly) one-hot
    logits = -(base[0] - q0).norm(dim=-1).numpy()
    p = np.exp(logits - logits.max())
    p /= p.sum()
    counts = _counts(w.argmax(-1).numpy(), k)
    assert chisquare(counts, p * draws).pvalue > 1e-3
    # the mean relaxed weight approaches the selection probabilities
    assert np.abs(w.mean(0).numpy() - p).max() < 0.02


def test_soft_mode_matches_hard_mode_at_small_tau_with_the_same_noise():
    feats, mask = _random_batch(11, 32, 5, 6, 3, p_valid=0.8)
    noise = -torch.log(-torch.log(torch.rand(5, 32, 5, 6, generator=_gen(3), dtype=F64).clamp(1e-12, 1 - 1e-12)))
    q = torch.randn(32, 3, generator=_gen(4), dtype=F64)
    hard = iterative_retrieval(feats, mask, tau=1e-4, mode="hard", query=q, noise=noise)
    soft = iterative_retrieval(feats, mask, tau=1e-4, mode="soft", query=q, noise=noise)
    assert (hard.index == soft.index).float().mean() > 0.97
    assert (
        torch.allclose(hard.weights, soft.weights, atol=1e-3)
        or (hard.weights - soft.weights).abs().amax((1, 2)).lt(1e-3).float().mean() > 0.97
    )


def test_batched_equals_one_image_at_a_time():
    """Padding objects / candidates and other images in the batch do not change an image's result."""
    feats, mask = _random_batch(21, 5, 4, 5, 3, p_valid=0.75)
    noise = -torch.log(-torch.log(torch.rand(4, 5, 4, 5, generator=_gen(2), dtype=F64).clamp(1e-12, 1 - 1e-12)))
    q = torch.randn(5, 3, generator=_gen(6), dtype=F64)
    for mode in ("hard", "soft", "relaxed"):
        batched = iterative_retrieval(feats, mask, tau=0.5, mode=mode, query=q, noise=noise)
        for i in range(5):
            n_i = int(mask[i].any(-1).nonzero().max()) + 1 if mask[i].any() else 1
            single = iterative_retrieval(
                feats[i : i + 1, :n_i],
                mask[i : i + 1, :n_i],
                tau=0.5,
                mode=mode,
                query=q[i : i + 1],
                noise=noise[:n_i, i : i + 1, :n_i],
            )
            assert torch.allclose(batched.weights[i, :n_i], single.weights[0], atol=1e-12)
            assert torch.allclose(batched.relaxed[i, :n_i], single.relaxed[0], atol=1e-12)
            assert torch.all(batched.weights[i, n_i:] == 0)


def _themed_scenes(seed: int, b: int, n: int, k: int, f_dim: int, themes: int = 6):
    """Scenes whose ground-truth patches share a hidden theme (a direction of length STRENGTH in the first
    ``themes`` feature dimensions, plus unit noise in all ``f_dim``); the other candidates have random themes.
    Returns raw features (B, N, K, F), GT column (B, N), mask (B, N, K)."""
    g = _gen(seed)
    directions = torch.eye(themes, f_dim)
    scene_theme = torch.randint(0, themes, (b,), generator=g)
    cand_theme = torch.randint(0, themes, (b, n, k), generator=g)
    gt_col = torch.randint(0, k, (b, n), generator=g)
    cand_theme[torch.arange(b)[:, None], torch.arange(n)[None, :], gt_col] = scene_theme[:, None]
    raw = STRENGTH * directions[cand_theme] + torch.randn(b, n, k, f_dim, generator=g)
    return raw, gt_col, torch.ones(b, n, k, dtype=torch.bool)


def _gt_loss(e_p, raw, gt_col, mask, mode, noise):
    """L_gt_sel as the method computes it: object 0's GT patch as query, the other objects' GT patches as targets."""
    b, n = gt_col.shape
    feats = e_p(raw)
    query = feats[torch.arange(b), 0, gt_col[:, 0]]
    out = iterative_retrieval(feats, mask, tau=1.0, mode=mode, query=query, noise=noise)
    include = torch.ones(b, n, dtype=torch.bool)
    include[:, 0] = False
    return gt_selection_loss(out, gt_col, include)


def _reference_gt_probability(e_p, raw, gt_col) -> float:
    """Independent of the library: the mean probability softmax(-||q - e||) over an object's own candidates
    gives its GT patch, with object 0's GT patch as the query q (no noise, no iterations)."""
    with torch.no_grad():
        feats = e_p(raw)
        b = feats.shape[0]
        q = feats[torch.arange(b), 0, gt_col[:, 0]]
        p = torch.softmax(-torch.linalg.norm(feats[:, 1:] - q[:, None, None], dim=-1), dim=-1)
        return float(p.gather(2, gt_col[:, 1:, None]).mean())


@pytest.mark.parametrize("mode", ["hard", "soft", "relaxed"])
def test_a_step_along_the_gt_selection_gradient_raises_the_ground_truth_probability(mode):
    """Direction: E_p moved a small step against the gradient of L_gt_sel (computed with Gumbel noise through
    the iterative retrieval) raises the ground-truth patches' selection probability, measured independently
    of the library; a step along the gradient lowers it."""
    raw, gt_col, mask = _themed_scenes(0, 64, 4, 6, 12)
    b, n, k = mask.shape
    noise = -torch.log(-torch.log(torch.rand(n, b, n, k, generator=_gen(1)).clamp(1e-12, 1 - 1e-12)))
    e_p = build(lambda: PatchEmbedder(12, 8, 16, 2), _gen(2))
    before = _reference_gt_probability(e_p, raw, gt_col)
    grads = torch.autograd.grad(_gt_loss(e_p, raw, gt_col, mask, mode, noise), list(e_p.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    changes = {}
    for sign in (-1.0, 1.0):
        moved = build(lambda: PatchEmbedder(12, 8, 16, 2), _gen(2))
        with torch.no_grad():
            for p, g in zip(moved.parameters(), grads):
                p.add_(sign * 0.05 * g / norm)
        changes[sign] = _reference_gt_probability(moved, raw, gt_col) - before
    assert changes[-1.0] > 1e-4 and changes[1.0] < -1e-4, changes


@pytest.mark.parametrize("mode", ["hard", "soft", "relaxed"])
def test_training_e_p_on_gt_selection_generalises_to_new_scenes(mode):
    """Learning, not memorising: Adam on L_gt_sel over themed training scenes makes held-out scenes' GT
    selection (the hard pick, Gumbel noise on) far more accurate than the untrained E_p and than chance."""
    b, n, k, f_dim = 64, 4, 6, 12
    e_p = build(lambda: PatchEmbedder(f_dim, 8, 16, 2), _gen(3))
    test_raw, test_gt, test_mask = _themed_scenes(99, 256, n, k, f_dim)

    def accuracy() -> float:
        with torch.no_grad():
            feats = e_p(test_raw)
            query = feats[torch.arange(256), 0, test_gt[:, 0]]
            out = iterative_retrieval(feats, test_mask, tau=1.0, mode="hard", query=query, generator=_gen(5))
            return float((out.index[:, 1:] == test_gt[:, 1:]).float().mean())

    untrained = accuracy()
    opt = torch.optim.Adam(e_p.parameters(), lr=3e-2)
    for step in range(60):
        raw, gt_col, mask = _themed_scenes(1000 + step, b, n, k, f_dim)
        feats = e_p(raw)
        query = feats[torch.arange(b), 0, gt_col[:, 0]]
        out = iterative_retrieval(feats, mask, tau=1.0, mode=mode, query=query, generator=_gen(step))
        include = torch.ones(b, n, dtype=torch.bool)
        include[:, 0] = False
        opt.zero_grad()
        gt_selection_loss(out, gt_col, include).backward()
        opt.step()
    trained = accuracy()
    # chance: 1 / k (a sixth of the other candidates share the theme too, so ~0.6 is the ceiling)
    assert trained > 2 * max(untrained, 1.0 / k), (untrained, trained)


def _planted(seed: int, b: int, n: int, k: int, d: int):
    """Each object's group holds one "compatible" candidate near a per-image centre and k - 1 scattered ones."""
    g = _gen(seed)
    centre = torch.randn(b, 1, 1, d, generator=g)
    feats = centre + 4.0 * torch.randn(b, n, k, d, generator=g)
    planted = torch.randint(0, k, (b, n), generator=g)
    idx = (torch.arange(b)[:, None], torch.arange(n)[None, :], planted)
    feats[idx] = centre[:, 0, 0][:, None] + 0.3 * torch.randn(b, n, d, generator=g)
    return feats, planted, torch.ones(b, n, k, dtype=torch.bool)


@pytest.mark.parametrize("mode", ["hard", "soft", "relaxed"])
def test_gumbel_retrieval_recovers_a_planted_compatible_set(mode):
    """With a random query candidate and Gumbel noise on (tau 1), the greedy iterative retrieval picks the
    planted mutually close candidates far above chance (1 / k); without the greedy update it does not."""
    feats, planted, mask = _planted(0, 400, 5, 8, 8)
    out = iterative_retrieval(feats, mask, tau=1.0, mode=mode, generator=_gen(1), greedy=True)
    hit = (out.index == planted).float()
    # chance: 1 / 8 per object; a random query is a scattered candidate 35 times in 40 (its group then misses)
    assert float(hit.mean()) > 0.45, float(hit.mean())
    whole_sets = float(hit.sum(1).ge(4).float().mean())  # >= 4 of the 5 objects planted; chance < 0.001
    assert whole_sets > 0.2, whole_sets
    # the same query with the greedy update off: each object sees only the (random) first query
    fixed = iterative_retrieval(feats, mask, tau=1.0, mode=mode, query=out.query, generator=_gen(1), greedy=False)
    assert float((fixed.index == planted).float().mean()) < float(hit.mean()) - 0.05


def test_training_e_p_on_the_cooccurrence_loss_makes_retrieved_sets_more_compatible():
    """Direction for L_occur_sel: the co-occurrence embedding puts same-theme patches together; Adam on
    L_occur_sel alone (it reaches E_p only through the straight-through selection weights) raises the share of
    held-out retrieved patch pairs that share a theme (random query, Gumbel noise; chance 1 / 6).
    (In soft / relaxed mode L_occur_sel alone does not do this here: blending every candidate makes the
    selected co-occurrence embeddings alike, so it rewards flat selections instead.)"""
    mode = "hard"
    b, n, k, f_dim, themes = 64, 4, 6, 12, 6

    def scenes(seed: int, count: int):
        g = _gen(seed)
        theme = torch.randint(0, themes, (count, n, k), generator=g)
        raw = STRENGTH * torch.eye(themes, f_dim)[theme] + torch.randn(count, n, k, f_dim, generator=g)
        cooc = torch.nn.functional.one_hot(theme, themes).float()  # same theme: distance 0, else sqrt(2)
        return raw, cooc, theme

    e_p = build(lambda: PatchEmbedder(f_dim, 8, 16, 2), _gen(4))
    test_raw, _, test_theme = scenes(77, 256)
    mask = torch.ones(256, n, k, dtype=torch.bool)

    def same_theme_pairs() -> float:
        with torch.no_grad():
            out = iterative_retrieval(e_p(test_raw), mask, tau=1.0, mode="hard", generator=_gen(6))
            picked = test_theme.gather(2, out.index[..., None]).squeeze(2)  # (B, N)
            same = picked[:, :, None] == picked[:, None, :]
            return float((same.sum((1, 2)) - n).float().mean() / (n * (n - 1)))

    untrained = same_theme_pairs()
    opt = torch.optim.Adam(e_p.parameters(), lr=3e-2)
    for step in range(150):
        raw, cooc, _ = scenes(2000 + step, b)
        out = iterative_retrieval(
            e_p(raw), torch.ones(b, n, k, dtype=torch.bool), tau=1.0, mode=mode, generator=_gen(step)
        )
        opt.zero_grad()
        cooccurrence_loss(out.select(cooc), torch.ones(b, n, dtype=torch.bool)).backward()
        opt.step()
    trained = same_theme_pairs()
    assert trained > untrained + 0.07 and trained > 1.4 / themes, (untrained, trained)


def test_ground_truth_query_retrieves_the_ground_truth_set():
    """GT patches share a cluster; with a GT patch as query (no noise) every object picks its GT."""
    g = _gen(4)
    b, n, k, d = 8, 4, 6, 5
    feats = torch.randn(b, n, k, d, generator=g, dtype=F64) * 3
    centre = torch.randn(b, 1, d, generator=g, dtype=F64) * 3
    gt_col = torch.randint(0, k, (b, n), generator=g)
    feats[torch.arange(b)[:, None], torch.arange(n)[None, :], gt_col] = centre + 0.01 * torch.randn(
        b, n, d, generator=g, dtype=F64
    )
    mask = torch.ones(b, n, k, dtype=torch.bool)
    query = feats[torch.arange(b), 0, gt_col[:, 0]]
    for mode in ("hard", "soft", "relaxed"):
        out = iterative_retrieval(feats, mask, tau=0.05, mode=mode, query=query, gumbel=False)
        assert torch.equal(out.index, gt_col)
        include = torch.ones(b, n, dtype=torch.bool)
        include[:, 0] = False
        assert float(gt_selection_loss(out, gt_col, include)) < 1e-3


def test_group_capped_softmax_against_bisection():
    g = _gen(8)
    for trial in range(20):
        b, groups, k = 3, 5, 4
        z = torch.randn(b, groups, k, generator=g, dtype=F64) * 3
        z[torch.rand(b, groups, k, generator=g) < 0.2] = float("-inf")
        cap = torch.rand(b, groups, generator=g, dtype=F64)
        cap[:, 0] = 1.0
        s = group_capped_softmax(z, cap)
        w = torch.exp(torch.logsumexp(z, -1))
        usable = torch.isfinite(torch.logsumexp(z, -1)) & (cap > 0)
        for i in range(b):
            wi = torch.where(usable[i], w[i], torch.zeros_like(w[i])).numpy()
            ci = torch.where(usable[i], cap[i], torch.zeros_like(cap[i])).numpy()
            if ci.sum() <= 1:
                ref = ci
            else:
                lo, hi = 0.0, 1e12
                for _ in range(200):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if np.minimum(ci, mid * wi).sum() < 1 else (lo, mid)
                ref = np.minimum(ci, hi * wi)
            assert np.allclose(s[i].sum(-1).numpy(), ref, atol=1e-9), trial
    # smooth almost everywhere: autograd matches finite differences at a generic point
    z = torch.randn(2, 4, 3, generator=g, dtype=F64, requires_grad=True)
    cap = torch.tensor([[1.0, 0.3, 0.5, 0.9], [0.2, 1.0, 0.05, 0.7]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(group_capped_softmax, (z, cap))


def test_requires_an_explicit_generator():
    feats, mask = _random_batch(0, 2, 2, 3, 2)
    with pytest.raises(ValueError, match="Generator"):
        iterative_retrieval(feats, mask)
    out = iterative_retrieval(feats, mask, query=torch.zeros(2, 2, dtype=F64), gumbel=False)  # deterministic
    assert out.weights.shape == (2, 2, 3)


def test_same_generator_state_gives_the_same_selection():
    feats, mask = _random_batch(3, 6, 4, 5, 3)
    a = iterative_retrieval(feats, mask, tau=0.5, generator=_gen(99))
    b = iterative_retrieval(feats, mask, tau=0.5, generator=_gen(99))
    c = iterative_retrieval(feats, mask, tau=0.5, generator=_gen(100))
    assert torch.equal(a.index, b.index) and not torch.equal(a.index, c.index)


def test_cooccurrence_loss_sums_the_pairwise_distances_as_eq_3():
    emb = torch.tensor(
        [
            [[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]],
            [[1.0, 1.0], [9.0, 9.0], [1.0, 1.0]],
            [[0.0, 0.0], [0.0, 2.0], [0.0, 0.0]],
        ],
        dtype=F64,
    )
    valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    # image 0: unordered pairs 5, 8, 5 -> sum over (i, j), i != j, = 36, mean 6; image 2: 2 x 2 = 4, mean 2;
    # image 1 has one object -> not counted; the batch value is the mean over the counted images
    assert float(cooccurrence_loss(emb, valid)) == pytest.approx((36.0 + 4.0) / 2, abs=1e-5)
    assert float(cooccurrence_loss(emb, valid, "sum")) == pytest.approx(20.0, abs=1e-5)
    assert float(cooccurrence_loss(emb, valid, "mean")) == pytest.approx((6.0 + 2.0) / 2, abs=1e-5)
    # the sum grows with the number of objects, the mean does not (n (n - 1) ordered pairs)
    ring = torch.nn.functional.normalize(torch.randn(1, 8, 4, generator=_gen(0), dtype=F64), dim=-1)
    full = torch.ones(1, 8, dtype=torch.bool)
    assert float(cooccurrence_loss(ring, full, "sum")) == pytest.approx(
        56 * float(cooccurrence_loss(ring, full, "mean")), rel=1e-9
    )
    with pytest.raises(ValueError, match="form"):
        cooccurrence_loss(emb, valid, "max")


def _relaxed_reference(
    feats: torch.Tensor, mask: torch.Tensor, query: torch.Tensor, noise: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 1 - 4 for one image, written out: pi_hat_i = -||q - e_i|| + g_i (noise drawn once), s = softmax(
    (pi_hat + P) / tau) over every valid candidate, P_i += log(1 - max_{group(i)} s), q = mean of the selected
    (s-weighted) features, s_total += s; n iterations (n = objects with a candidate)."""
    n, k, _ = feats.shape
    groups = [g for g in range(n) if mask[g].any()]
    penalty = torch.zeros(n, k, dtype=feats.dtype)
    total = torch.zeros(n, k, dtype=feats.dtype)
    q, q_sum = query.clone(), torch.zeros_like(query)
    for j in range(len(groups)):
        logits = torch.full((n, k), float("-inf"), dtype=feats.dtype)
        for g in range(n):
            for i in range(k):
                if mask[g, i]:
                    logits[g, i] = (-torch.linalg.norm(q - feats[g, i]) + noise[g, i] + penalty[g, i]) / tau
        s = torch.softmax(logits.reshape(-1), 0).reshape(n, k)
        for g in range(n):
            m = float(s[g].max())
            penalty[g] += np.log1p(-min(m, 1 - 8 * np.finfo(np.float64).eps))
        total += s
        q_sum = q_sum + (s[..., None] * feats).sum((0, 1))
        q = q_sum / (j + 1)
    return total


def test_relaxed_mode_is_eq_4_as_written():
    feats, mask = _random_batch(41, 6, 4, 5, 3, p_valid=0.8)
    noise = -torch.log(-torch.log(torch.rand(4, 6, 4, 5, generator=_gen(8), dtype=F64).clamp(1e-12, 1 - 1e-12)))
    q = torch.randn(6, 3, generator=_gen(9), dtype=F64)
    out = iterative_retrieval(feats, mask, tau=0.7, mode="relaxed", query=q, noise=noise)
    for i in range(6):
        ref = _relaxed_reference(feats[i], mask[i], q[i], noise[0, i], 0.7)
        assert torch.allclose(out.weights[i], ref, atol=1e-10), i
    assert torch.equal(out.weights, out.relaxed)
    ok = mask.any(-1)
    rows = out.relaxed / out.relaxed.sum(-1, keepdim=True)
    assert torch.allclose(out.probs[ok], rows[ok])
    # no straight-through: the weights are not one-hot, and the gradient is the relaxation's own
    assert ((out.weights[ok] > 1e-6) & (out.weights[ok] < 1 - 1e-6)).any()


def test_relaxed_mode_can_give_a_group_more_than_one_unit_and_soft_mode_never_does():
    """Why `soft` exists: eq. 4 only damps a group after a soft selection; with the greedy query update the
    damped group can win again. Group masses of hard / soft are exactly 1."""
    feats, mask = _random_batch(5, 256, 5, 6, 3, p_valid=1.0)
    mask[:] = True
    results = {}
    for mode in ("hard", "soft", "relaxed"):
        out = iterative_retrieval(feats, mask, tau=1.0, mode=mode, generator=_gen(3))
        results[mode] = group_masses(out.relaxed if mode != "hard" else out.weights, mask)
    assert torch.allclose(results["hard"], torch.ones_like(results["hard"]))
    assert torch.allclose(results["soft"], torch.ones_like(results["soft"]), atol=1e-9)
    relaxed = results["relaxed"]
    assert (relaxed > 1 + 1e-3).any() and (relaxed < 1 - 1e-3).any()
    assert torch.allclose(relaxed.sum(1), torch.full((256,), 5.0, dtype=F64), atol=1e-9)  # still n in total


def test_per_image_generators_make_results_independent_of_the_batch():
    """With one generator per image (seeded from the image), an image's retrieval does not depend on
    the other images of the batch or on how much padding the batch adds."""
    feats, mask = _random_batch(31, 6, 5, 4, 3, p_valid=0.9)
    mask[:, :2] = True  # every image has at least two objects
    seeds = [100 + i for i in range(6)]
    for mode in ("hard", "soft", "relaxed"):
        batched = iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=[_gen(s) for s in seeds])
        for i in (0, 3, 5):
            n_i = int((mask[i].any(-1) * torch.arange(1, 6)).max())
            alone = iterative_retrieval(
                feats[i : i + 1, :n_i], mask[i : i + 1, :n_i], tau=0.5, mode=mode, generator=[_gen(seeds[i])]
            )
            assert torch.allclose(batched.weights[i, :n_i], alone.weights[0], atol=1e-12)
            assert torch.equal(batched.query[i], alone.query[0])
        other = iterative_retrieval(
            feats, mask, tau=0.5, mode=mode, generator=[_gen(s + 1000) for s in seeds], query=batched.query
        )
        assert not torch.allclose(other.weights, batched.weights)  # the per-image noise is used
        with pytest.raises(ValueError, match="generators"):
            iterative_retrieval(feats, mask, generator=[_gen(0)])


def test_group_counts_make_the_retrieval_read_nothing_from_the_device():
    """With the mask's host counts (``GroupCounts``, made on the batch's host side) the retrieval makes no host
    synchronisation (counted on the CPU as on a GPU) and gives exactly the result of reading them from the mask."""
    from retrievegan.train.stepcount import count_ops

    feats, mask = _random_batch(41, 4, 5, 4, 3, p_valid=0.6)
    mask[1, 1] = False  # a real object without candidates before one with candidates
    mask[1, 2, 0] = True
    counts = GroupCounts.of(mask)
    ok = mask.any(-1)
    assert counts.groups == tuple(ok.sum(1).tolist()) and counts.iterations == max(counts.groups)
    assert counts.span == tuple(int((ok[i] * torch.arange(1, 6)).max()) for i in range(4))
    assert counts.span[1] >= 3 and counts.groups[1] < counts.span[1]
    for mode in ("hard", "soft", "relaxed"):
        ref = iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=[_gen(s) for s in range(4)])
        gens = [_gen(s) for s in range(4)]
        out, ops = count_ops(
            lambda: iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=gens, counts=counts), [feats, mask]
        )
        assert ops.syncs == 0, ops.summary()
        for field in ("weights", "relaxed", "probs", "index", "step", "selected", "query"):
            assert torch.equal(getattr(out, field), getattr(ref, field)), (mode, field)
    _, ops = count_ops(
        lambda: iterative_retrieval(feats, mask, mode="hard", generator=[_gen(s) for s in range(4)]), [feats, mask]
    )
    assert ops.syncs >= 1  # without them the counts are read from the device


def test_embed_candidates_runs_e_p_once_per_distinct_patch():
    bank = torch.randn(50, 7, generator=_gen(0))
    ids = torch.randint(0, 50, (3, 4, 6), generator=_gen(1))
    ids[0, 3] = -1
    ids[2, :, 5] = -1
    e_p = build(lambda: PatchEmbedder(7, 5, 8, 2), _gen(2))
    calls = []
    e_p.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    out = embed_candidates(e_p, bank, ids)
    assert calls == [int(torch.unique(ids[ids >= 0]).numel())]
    expected = e_p(bank[ids.clamp(min=0)]) * (ids >= 0)[..., None]
    assert torch.allclose(out, expected, atol=1e-6)
    out_np = embed_candidates(e_p, bank.numpy(), ids)  # a numpy (memmap) feature table works too
    assert torch.allclose(out_np, expected, atol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in e_p.parameters())
