"""Differentiable iterative retrieval (retrievegan.models.retrieval): properties, sampling law, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from retrievegan.models.init import build
from retrievegan.models.retrieval import (
    PatchEmbedder,
    RetrievalConfig,
    cooccurrence_loss,
    embed_candidates,
    group_capped_softmax,
    gt_selection_loss,
    iterative_retrieval,
)

F64 = torch.float64


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
@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), n=st.integers(1, 5), k=st.integers(1, 6),
       d=st.integers(1, 4), tau=st.sampled_from([0.05, 0.3, 1.0, 5.0]), mode=st.sampled_from(["hard", "soft"]),
       greedy=st.booleans())
def test_relaxed_n_hot_properties(seed, b, n, k, d, tau, mode, greedy):
    feats, mask = _random_batch(seed, b, n, k, d)
    out = iterative_retrieval(feats, mask, tau=tau, mode=mode, generator=_gen(seed + 1), greedy=greedy)
    w = out.weights.detach()
    group_ok = mask.any(-1)
    n_sel = group_ok.sum(1)
    assert torch.equal(out.num_selected, n_sel)
    # sums to n (the number of objects that have candidates), every entry in [0, 1]
    assert torch.allclose(w.sum((1, 2)), n_sel.to(F64), atol=1e-9)
    assert w.min() >= 0.0 and w.max() <= 1.0 + 1e-9
    # one unit per retrievable object, nothing for padding objects or padding candidates
    assert torch.allclose(w.sum(-1), group_ok.to(F64), atol=1e-9)
    assert torch.all(w[~mask] == 0)
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
    for mode in ("hard", "soft"):
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
    out = iterative_retrieval(feats, mask, tau=0.7, mode="hard", generator=_gen(7),
                              query=q0.expand(draws, d), greedy=True)
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
    valid2[(a // k) * k:(a // k + 1) * k] = False  # the first pick's group is disabled
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
    out = iterative_retrieval(base.expand(draws, 1, k, d), mask, tau=1e-3, mode="soft", generator=_gen(9),
                              query=q0.expand(draws, d))
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
    assert torch.allclose(hard.weights, soft.weights, atol=1e-3) or \
        (hard.weights - soft.weights).abs().amax((1, 2)).lt(1e-3).float().mean() > 0.97


def test_batched_equals_one_image_at_a_time():
    """Padding objects / candidates and other images in the batch do not change an image's result."""
    feats, mask = _random_batch(21, 5, 4, 5, 3, p_valid=0.75)
    noise = -torch.log(-torch.log(torch.rand(4, 5, 4, 5, generator=_gen(2), dtype=F64).clamp(1e-12, 1 - 1e-12)))
    q = torch.randn(5, 3, generator=_gen(6), dtype=F64)
    for mode in ("hard", "soft"):
        batched = iterative_retrieval(feats, mask, tau=0.5, mode=mode, query=q, noise=noise)
        for i in range(5):
            n_i = int(mask[i].any(-1).nonzero().max()) + 1 if mask[i].any() else 1
            single = iterative_retrieval(feats[i:i + 1, :n_i], mask[i:i + 1, :n_i], tau=0.5, mode=mode,
                                         query=q[i:i + 1], noise=noise[:n_i, i:i + 1, :n_i])
            assert torch.allclose(batched.weights[i, :n_i], single.weights[0], atol=1e-12)
            assert torch.allclose(batched.relaxed[i, :n_i], single.relaxed[0], atol=1e-12)
            assert torch.all(batched.weights[i, n_i:] == 0)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_gradients_reach_the_patch_embedding(mode):
    g = _gen(0)
    b, n, k, f_dim = 4, 3, 5, 10
    raw = torch.randn(b, n, k, f_dim, generator=g)
    cooc = torch.nn.functional.normalize(torch.randn(b, n, k, 6, generator=g), dim=-1)
    mask = torch.ones(b, n, k, dtype=torch.bool)
    mask[0, 2] = False
    cfg = RetrievalConfig(embed_dim=8, embed_hidden=16, embed_layers=2)
    e_p = build(lambda: PatchEmbedder(f_dim, cfg.embed_dim, cfg.embed_hidden, cfg.embed_layers), _gen(1))
    out = iterative_retrieval(e_p(raw), mask, tau=0.5, mode=mode, generator=_gen(2))
    # the co-occurrence loss reaches E_p only through the selection weights
    loss = cooccurrence_loss(out.select(cooc), mask.any(-1))
    loss.backward()
    grads = [p.grad for p in e_p.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    e_p.zero_grad()
    out = iterative_retrieval(e_p(raw), mask, tau=0.5, mode=mode, generator=_gen(2))
    gt = torch.zeros(b, n, dtype=torch.long)
    gt_selection_loss(out, gt, mask.any(-1)).backward()
    assert all(torch.isfinite(p.grad).all() for p in e_p.parameters())
    assert sum(float(p.grad.abs().sum()) for p in e_p.parameters()) > 0


def test_ground_truth_query_retrieves_the_ground_truth_set():
    """GT patches share a cluster; with a GT patch as query (no noise) every object picks its GT."""
    g = _gen(4)
    b, n, k, d = 8, 4, 6, 5
    feats = torch.randn(b, n, k, d, generator=g, dtype=F64) * 3
    centre = torch.randn(b, 1, d, generator=g, dtype=F64) * 3
    gt_col = torch.randint(0, k, (b, n), generator=g)
    feats[torch.arange(b)[:, None], torch.arange(n)[None, :], gt_col] = centre + 0.01 * torch.randn(b, n, d, generator=g, dtype=F64)
    mask = torch.ones(b, n, k, dtype=torch.bool)
    query = feats[torch.arange(b), 0, gt_col[:, 0]]
    for mode in ("hard", "soft"):
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


def test_cooccurrence_loss_is_the_mean_pairwise_distance():
    emb = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]], [[1.0, 1.0], [9.0, 9.0], [1.0, 1.0]]], dtype=F64)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    # image 0: pairs 5, 8, 5 -> mean 6; image 1 has one object -> not counted
    assert float(cooccurrence_loss(emb, valid)) == pytest.approx(6.0, abs=1e-6)


def test_per_image_generators_make_results_independent_of_the_batch():
    """With one generator per image (seeded from the image), an image's retrieval does not depend on
    the other images of the batch or on how much padding the batch adds."""
    feats, mask = _random_batch(31, 6, 5, 4, 3, p_valid=0.9)
    mask[:, :2] = True  # every image has at least two objects
    seeds = [100 + i for i in range(6)]
    for mode in ("hard", "soft"):
        batched = iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=[_gen(s) for s in seeds])
        for i in (0, 3, 5):
            n_i = int((mask[i].any(-1) * torch.arange(1, 6)).max())
            alone = iterative_retrieval(feats[i:i + 1, :n_i], mask[i:i + 1, :n_i], tau=0.5, mode=mode,
                                        generator=[_gen(seeds[i])])
            assert torch.allclose(batched.weights[i, :n_i], alone.weights[0], atol=1e-12)
            assert torch.equal(batched.query[i], alone.query[0])
        other = iterative_retrieval(feats, mask, tau=0.5, mode=mode, generator=[_gen(s + 1000) for s in seeds],
                                    query=batched.query)
        assert not torch.allclose(other.weights, batched.weights)  # the per-image noise is used
        with pytest.raises(ValueError, match="generators"):
            iterative_retrieval(feats, mask, generator=[_gen(0)])


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
