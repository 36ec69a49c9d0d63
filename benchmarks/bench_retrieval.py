"""Differentiable iterative retrieval: batched implementation vs. a per-image loop, forward + backward.

One training step's retrieval: E_p (an MLP over frozen patch features) on the candidates
(``embed_candidates``: once per distinct bank patch, not on padding), the iterative retrieval of
``retrievegan.models.retrieval``, the co-occurrence loss on the selected patches and the backward pass
to E_p. Candidate lists come from a bank of ``BENCH_RETRIEVAL_BANK`` patches (default 8000, the embedded
benchmark's train bank), objects of one of 11 categories sharing a pool of 3k patches. Sizes: ``BENCH_RETRIEVAL_B`` images (default 16, the paper's batch),
``BENCH_RETRIEVAL_N`` object slots (default 8; the images have 3..8 objects, padded),
``BENCH_RETRIEVAL_K`` candidates per object (default 32, ``retrieval.k``), ``BENCH_RETRIEVAL_THREADS``
torch threads (default 1), feature width 230 (the embedded default's patch features), E_p
230 -> 256 -> 128.

Reference: a straightforward implementation written here, one image at a time without padding (the
iterations vectorised over that image's candidates only). It is independent code for the hard
(straight-through) mode, so the check that both give the same selections, weights and E_p gradients
on the same noise also cross-checks the batched code. The soft and relaxed modes' reference calls the library one
image at a time. The reference runs E_p on each image's candidate rows.

    python benchmarks/bench_retrieval.py      (or python -m benchmarks.bench_retrieval)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, row, timed  # noqa: E402

B = int(os.environ.get("BENCH_RETRIEVAL_B", 16))
N = int(os.environ.get("BENCH_RETRIEVAL_N", 8))
K = int(os.environ.get("BENCH_RETRIEVAL_K", 32))
FEAT, HIDDEN, EMB, OCC = 230, 256, 128, 64
TAU = 1.0
REPEAT = int(os.environ.get("BENCH_RETRIEVAL_REPEAT", 15))
BANK = int(os.environ.get("BENCH_RETRIEVAL_BANK", 8000))
THREADS = int(os.environ.get("BENCH_RETRIEVAL_THREADS", 1))


def reference_hard(feats, masks, queries, noise, tau):
    """Per-image loop: ``feats[i]`` ``(n_i, K, D)``, ``masks[i]`` ``(n_i, K)``, ``queries[i]`` ``(D,)``,
    ``noise[i]`` ``(n_i, n_i, K)``. Returns a list of straight-through weights ``(n_i, K)``."""
    import torch

    out = []
    for f, m, q, g in zip(feats, masks, queries, noise):
        n_i, k, _ = f.shape
        flat_f = f.reshape(n_i * k, -1)
        group = torch.arange(n_i).repeat_interleave(k)
        allowed = m.reshape(-1).clone()
        weights = torch.zeros(n_i * k, dtype=f.dtype)
        chosen = []
        for j in range(int(m.any(1).sum())):
            scores = -torch.linalg.vector_norm(flat_f - q, dim=1) + g[j].reshape(-1)
            logits = torch.where(allowed, scores / tau, torch.tensor(float("-inf"), dtype=f.dtype))
            s = torch.softmax(logits, 0)
            pick = int(torch.argmax(logits))
            hard = torch.zeros_like(s)
            hard[pick] = 1.0
            st = hard + (s - s.detach())
            weights = weights + st
            chosen.append((st[:, None] * flat_f).sum(0))
            q = torch.stack(chosen).mean(0)
            allowed = allowed & (group != group[pick])  # disable the whole group of the pick
        out.append(weights.reshape(n_i, k))
    return out


def run() -> list[dict]:
    import torch

    torch.set_num_threads(THREADS)  # a shared 2-core machine: OpenMP spin-waiting makes 2 threads erratic

    from retrievegan.models.init import build
    from retrievegan.models.retrieval import PatchEmbedder, cooccurrence_loss, embed_candidates, iterative_retrieval

    gen = torch.Generator().manual_seed(0)
    num_obj = torch.randint(3, N + 1, (B,), generator=gen)
    num_obj[0] = N
    bank = torch.randn(BANK, FEAT, generator=gen)  # frozen patch features of the training bank
    # candidate lists: objects of one category share a pool of patches (as the pre-filter's lists do)
    category = torch.randint(0, 11, (B, N), generator=gen)
    pools = torch.randint(0, BANK, (11, 3 * K), generator=gen)
    cols = torch.argsort(torch.rand(B, N, 3 * K, generator=gen), dim=-1)[..., :K]
    ids = pools[category][torch.arange(B)[:, None, None], torch.arange(N)[None, :, None], cols]
    raw = bank[ids]  # (B, N, K, FEAT)
    cooc = torch.nn.functional.normalize(torch.randn(B, N, K, OCC, generator=gen), dim=-1)
    mask = (torch.arange(N)[None, :] < num_obj[:, None])[..., None].expand(B, N, K).clone()
    mask &= torch.rand(B, N, K, generator=gen) < 0.95  # a few short candidate lists
    mask[..., 0] |= torch.arange(N)[None, :] < num_obj[:, None]
    noise = -torch.log(-torch.log(torch.rand(N, B, N, K, generator=gen).clamp(1e-12, 1 - 1e-7)))
    e_p = build(lambda: PatchEmbedder(FEAT, EMB, HIDDEN, 2), torch.Generator().manual_seed(1))
    q_idx = torch.zeros(B, dtype=torch.long)  # initial query: candidate 0 of object 0

    def batched(mode: str, embed: bool = True):
        e_p.zero_grad()
        fixed.grad = None
        feats = embed_candidates(e_p, bank, ids.masked_fill(~mask, -1)) if embed else fixed
        out = iterative_retrieval(feats, mask, tau=TAU, mode=mode, query=feats[torch.arange(B), 0, q_idx], noise=noise)
        loss = cooccurrence_loss(out.select(cooc), mask.any(-1))
        loss.backward()
        return out.weights.detach(), [p.grad.clone() for p in e_p.parameters()] if embed else [fixed.grad.clone()]

    def per_image(mode: str, embed: bool = True):
        e_p.zero_grad()
        if not embed:
            fixed.grad = None
        losses, weights = [], []
        for i in range(B):
            n_i = int(num_obj[i])
            feats = e_p(raw[i, :n_i]) if embed else fixed[i, :n_i]  # only this image's candidates
            if mode == "hard":
                w = reference_hard([feats], [mask[i, :n_i]], [feats[0, q_idx[i]]], [noise[:n_i, i, :n_i]], TAU)[0]
            else:
                w = iterative_retrieval(
                    feats[None],
                    mask[i : i + 1, :n_i],
                    tau=TAU,
                    mode=mode,
                    query=feats[0, q_idx[i]][None],
                    noise=noise[:n_i, i : i + 1, :n_i],
                ).weights[0]
            sel = (w[..., None] * cooc[i, :n_i]).sum(1)
            losses.append(cooccurrence_loss(sel[None], mask[i : i + 1, :n_i].any(-1)))
            weights.append(w.detach())
        # the batched loss averages over images with >= 2 objects: all of them here
        loss = torch.stack(losses).mean()
        loss.backward()
        return weights, [p.grad.clone() for p in e_p.parameters()] if embed else [fixed.grad.clone()]

    with torch.no_grad():
        fixed = e_p(raw) * mask[..., None]
    fixed.requires_grad_(True)

    rows = []
    for embed in (True, False):
        for mode in ("hard", "soft", "relaxed"):
            fast_s, (w_fast, g_fast) = timed(lambda: batched(mode, embed), REPEAT)
            ref_s, (w_ref, g_ref) = timed(lambda: per_image(mode, embed), REPEAT)
            for i in range(B):
                n_i = int(num_obj[i])
                if not torch.allclose(w_fast[i, :n_i], w_ref[i], atol=1e-5):
                    raise AssertionError(f"{mode}: batched and per-image selections differ on image {i}")
            for a, b in zip(g_fast, g_ref):
                if not torch.allclose(a, b, rtol=1e-3, atol=1e-6):
                    raise AssertionError(f"{mode}: gradients differ (max {float((a - b).abs().max()):.3g})")
            what = "E_p + retrieval + loss" if embed else "retrieval + loss (embeddings given)"
            reference = "independent per-image loop" if mode == "hard" else "library, one image at a time"
            rows.append(
                row(
                    "retrieval",
                    f"{mode}: batches/s, fwd+bwd of {what}",
                    1.0 / fast_s,
                    "batches/s",
                    reference=1.0 / ref_s,
                    note=f"B={B}, n<={N} objects (3..{N}, padded), k={K}; reference: {reference}; "
                    f"E_p {FEAT}->{HIDDEN}->{EMB}; threads={torch.get_num_threads()}; "
                    f"same selections and gradients: yes",
                )
            )
    return rows


if __name__ == "__main__":
    print_table(run())
