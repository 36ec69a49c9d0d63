"""RetrieveGAN (Tseng et al., ECCV 2020): scene graph -> differentiable patch retrieval -> image.

Per training step (``generator_step``), for a batch of ``B`` images with at most ``N`` real objects:

1. candidates: the ``k`` pre-filtered bank patches of every object (``features/prefilter/candidates.npy``,
   sg2im GCN features, never the object's own image) -> ``ids (B, N, k)``; the object's own patch is
   appended as column ``k`` for the ground-truth selection loss (:func:`~retrievegan.embed.prefilter.
   add_ground_truth`);
2. the patch embedding E_p (network ``retriever``: an MLP over the frozen patch features) embeds every
   distinct candidate once -> ``(B, N, k + 1, D)``;
3. iterative differentiable retrieval (:func:`~retrievegan.models.retrieval.iterative_retrieval`) over the
   ``k`` pre-filtered candidates, query = a random candidate, Gumbel noise and the random query drawn from
   each image's own ``torch.Generator``; the selection weights (``retrieval.mode``: straight-through
   one-hot, group-capped soft, or eq. 4's relaxed n-hot vector) weight the patch pixels, so the
   generator's losses reach E_p;
4. the shared generator (:mod:`retrievegan.models.patch_method`) renders the retrieved patches (``fake``)
   and the ground-truth patches (``recon``), both at the ground-truth boxes;
5. losses (eq. 5 + supplement): ``gt_sel`` (a random object's ground-truth patch as query, the other
   objects' ground-truth patches as targets), ``occur_sel`` (eq. 3: the sum of the pairwise distances of
   the retrieved patches in the pre-trained co-occurrence space F_occur, per image; ``occur_form: mean``
   averages over the pairs instead), adversarial image / object + auxiliary classification on ``fake``,
   L1 reconstruction + perceptual on ``recon``, box L1.

The ablations of the paper's Table 2 are the switches ``gt_selection`` and ``cooccurrence``; the run catalogue
(``retrievegan.runs``) declares each ablation as this method with the switches set in its ``--params``.

Sampling: the same retrieval in hard mode (whatever the training mode: the generator gets one real patch
per object and ``retrievals.json`` one bank id) on the test objects' candidates, query = a random
candidate, Gumbel noise on (``sample_gumbel``), everything drawn from the image's generator (the two
samples of a scene graph differ by their retrieval seed); the retrieved bank ids go to ``retrievals.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.embed.prefilter import add_ground_truth, gather_candidates, load_candidates
from retrievegan.models.critic import CompatCritic, batch_composite
from retrievegan.models.init import build
from retrievegan.models.patch_method import (
    PatchMethod,
    PatchMethodConfig,
    check_settings,
    gather_rows,
    load_rows,
    per_image_uniform,
    slot_lists,
    slot_rows,
    slots_to_objects,
)
from retrievegan.models.retrieval import (
    GroupCounts,
    OccurForm,
    PatchEmbedder,
    RetrievalConfig,
    RetrievalOutput,
    cooccurrence_loss,
    gt_selection_loss,
    iterative_retrieval,
    retrieval_loop,
)
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import Role, SampleOutput, StepContext, StepOutput


@dataclasses.dataclass(frozen=True)
class RetrieveGanConfig(PatchMethodConfig):
    """The ``retrievegan`` config section, with ``retrieval`` from the top-level section and the ablation switches
    (``retrievegan.runs.run_params``)."""

    retrieval: RetrievalConfig = RetrievalConfig()  # tau, k, mode, greedy, gumbel, E_p sizes
    gt_selection: bool = True  # ablation switch: L_gt^sel
    cooccurrence: bool = True  # ablation switch: L_occur^sel
    gt_sel_weight: float = 0.1  # lambda_gt^sel (supplement)
    occur_sel_weight: float = 0.001  # lambda_occur^sel (supplement)
    occur_form: OccurForm = "sum"  # paper eq. 3: sum over the pairs of an image (mean: divided by the number of pairs)
    gt_query: Literal["random", "first"] = "random"  # ours: whose GT patch is the L_gt query (per image)
    sample_gumbel: bool = True  # ours: Gumbel noise at test time (the two samples differ by their retrieval seed)
    freeze_retriever: bool = (
        False  # ours (claim C1's control arm): E_p keeps its initial weights (no gradient, no update)
    )
    trace_retriever: bool = (
        True  # ours (diagnostics, no effect on training): on logged steps, losses.jsonl ``meta`` gets
    )
    # the norm of the gradient reaching E_p from each loss group and the retrieval's sharpness (:meth:`RetrieveGan.trace`)
    composite_adv_weight: float = 0.0  # ours (claim C1's `claims_c1` setting; 0: off, the paper): the generator's
    # adversarial loss from D_comp, a discriminator with a whole-image receptive field (models.critic.CompatCritic) that
    # sees the retrieved patches pasted at the ground-truth boxes through the objects' masks (real: the image's own
    # patches pasted the same way). The composite depends on the retrieval alone, so this loss reaches E_p only.
    d_comp_channels: tuple[int, ...] = (16, 32, 64)  # ours: D_comp's stride-2 conv stages (then one linear layer)
    optim_d_comp: AdamConfig = AdamConfig(lr=1e-3, betas=(0.0, 0.9))  # as D_img

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gt_sel_weight < 0 or self.occur_sel_weight < 0:
            raise ValueError("retrieval loss weights must be >= 0")
        if self.occur_form not in ("sum", "mean"):
            raise ValueError(f"occur_form must be sum or mean, got {self.occur_form!r}")
        if self.composite_adv_weight < 0:
            raise ValueError("composite_adv_weight must be >= 0")


class PatchRetriever(nn.Module):
    """The trainable part of the retrieval: E_p over frozen patch features.

    forward(rows (U, F) features of U distinct patches, index (B, N, K) int64 into rows, -1 padding)
    -> embeddings (B, N, K, D), zeros at padding. A gather from the U embeddings and a zero row (no boolean
    mask: no host synchronisation, no graph break).
    """

    def __init__(self, feature_dim: int, cfg: RetrievalConfig):
        super().__init__()
        self.embed = PatchEmbedder(feature_dim, cfg.embed_dim, cfg.embed_hidden, cfg.embed_layers)

    def forward(self, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        emb = self.embed(rows)  # (U, D)
        padded = torch.cat([emb, emb.new_zeros((1, emb.shape[1]))])  # row U: the padding's zeros
        flat = torch.where(index >= 0, index, emb.shape[0]).reshape(-1)
        return padded.index_select(0, flat).view(tuple(index.shape) + (emb.shape[1],))


def unique_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (...) int64 with -1 padding -> (distinct ids (U,), index (...) into them, -1 at padding)."""
    valid = ids >= 0
    uniq, inverse = torch.unique(ids[valid], return_inverse=True)
    index = torch.full_like(ids, -1)
    index[valid] = inverse
    return uniq, index


class RetrieveGan(PatchMethod):
    name = "retrievegan"
    config_class = RetrieveGanConfig
    settings = ("pred_bbox", "gt_bbox")
    required_inputs = ("patches", "patch_features", "cooccur_embeddings", "candidates")

    def __init__(self, config: RetrieveGanConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        num = len(self.bank)
        self.candidates = torch.from_numpy(
            np.array(load_candidates(self.inputs["candidates"], config.retrieval.k, num))
        )  # (P, k)
        self.features = load_rows(self.inputs["patch_features"], num, "patch features")  # (P, F)
        self.cooccur = load_rows(self.inputs["cooccur_embeddings"], num, "co-occurrence embeddings")  # (P, E)
        self.retrieval_loop: Callable[..., tuple[torch.Tensor, ...]] = retrieval_loop  # compile_functions: compiled

    # --- networks ---
    def extra_network_names(self) -> tuple[str, ...]:
        return ("retriever",)

    def extra_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        dim, cfg = int(self.features.shape[1]), self.config.retrieval
        retriever = build(lambda: PatchRetriever(dim, cfg), generator)
        if self.config.freeze_retriever:  # the loop leaves parameters a method froze frozen (Adam: no gradient)
            retriever.requires_grad_(False)
        return {"retriever": retriever}

    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        """PatchMethod's networks (+ E_p), and D_comp last when ``composite_adv_weight`` > 0 (so the others are
        initialised from the same draws either way)."""
        nets = super().build_networks(generator)
        if self.config.composite_adv_weight > 0:
            channels, size = self.config.d_comp_channels, self.spec.image_size
            nets["d_comp"] = build(lambda: CompatCritic(channels, size), generator)
        return nets

    def roles(self) -> Mapping[str, Role]:
        roles = dict(super().roles())
        if self.config.composite_adv_weight > 0:
            roles["d_comp"] = "discriminator"
        return roles

    def optimizer(self, network: str) -> AdamConfig:
        return self.config.optim_d_comp if network == "d_comp" else super().optimizer(network)

    def composite(self, batch: SceneGraphBatch, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S): per-object crops (O, 3, C, C) pasted at the ground-truth boxes through the object masks."""
        return batch_composite(batch, crops, self.spec.image_size)

    def discriminator_terms(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any) -> losses.LossSum:
        """PatchMethod's D_img / D_obj terms, and D_comp's (real: the own patches' composite; fake: the retrieved
        patches') when it exists."""
        terms = super().discriminator_terms(nets, batch, cache)
        if "d_comp" in nets:
            d_comp = nets["d_comp"]
            terms.add(
                "comp_adv",
                losses.discriminator_adversarial(
                    d_comp(cache["comp_real"]), d_comp(cache["comp_fake"]), self.config.gan_loss
                ),
            )
        return terms

    def notes(self) -> dict[str, str]:
        notes = dict(super().notes())
        if self.config.composite_adv_weight > 0:
            notes["d_comp"] = (
                f"composite discriminator on, weight {self.config.composite_adv_weight:g} (claims_c1 "
                "setting: not the paper's training)"
            )
        if self.config.freeze_retriever:
            notes["retriever"] = "frozen at its initialisation (freeze_retriever: true): E_p gets no update"
        return notes

    # --- host side of a step ---
    def host_prepare(self, batch: SceneGraphBatch) -> SceneGraphBatch:
        """The retrieval's inputs, made on the host from the CPU batch (``batch.extras``), so that a step reads
        nothing from the device: ``slot_rows`` (B, N); the candidates ``candidate_ids`` (B, N, k) and their host
        ``counts`` (:class:`~retrievegan.models.retrieval.GroupCounts`); with L_gt, ``gt_ids`` (B, N, k + 1),
        ``gt_position`` (B, N), ``gt_counts``; the distinct patches E_p embeds in a training step, ``embed_rows``
        (U, F) frozen features and ``embed_index`` (B, N, k [+ 1]) into them (-1 padding); with L_occur, the
        candidates' co-occurrence embeddings ``cooccur`` (B, N, k, E). The frozen tables stay on the host (memory
        maps): only a batch's rows move to the device (paper scale: at most B N (k + 1) = 4,224 rows of 512
        floats, 8.7 MB, at batch 16)."""
        cfg = self.config
        rows = slot_rows(batch)
        ids, mask = gather_candidates(self.candidates, rows)
        extras: dict[str, Any] = {"slot_rows": rows, "candidate_ids": ids, "counts": GroupCounts.of(mask)}
        embedded = ids
        if cfg.gt_selection:
            embedded, gt_pos = add_ground_truth(ids, rows)
            extras.update(gt_ids=embedded, gt_position=gt_pos, gt_counts=GroupCounts.of(embedded >= 0))
        uniq, index = unique_rows(embedded)
        extras.update(embed_rows=gather_rows(self.features, uniq[None])[0], embed_index=index)
        if cfg.cooccurrence:
            extras["cooccur"] = gather_rows(self.cooccur, ids)  # (B, N, k, E)
        return dataclasses.replace(batch, extras={**batch.extras, **extras})

    # --- retrieval ---
    def embed(self, retriever: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """E_p of candidate ids (B, N, K) (-1 padding) -> (B, N, K, D); each distinct patch embedded once."""
        uniq, index = unique_rows(ids)
        rows = gather_rows(self.features, uniq[None])[0]
        return retriever(rows, index)

    def compile_functions(self, compile: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """The retrieval's iterations (``retrieval_loop``: its random draws stay eager) compiled; recompiled per
        distinct number of iterations (a host int: the most objects with candidates of an image); and the
        perceptual loss's VGG-19 (``PatchMethod``)."""
        super().compile_functions(compile)
        self.retrieval_loop = compile(retrieval_loop)

    def retrieve(
        self,
        emb: torch.Tensor,
        mask: torch.Tensor,
        generators: Sequence[torch.Generator],
        mode: str,
        gumbel: bool,
        query: torch.Tensor | None = None,
        counts: GroupCounts | None = None,
    ) -> RetrievalOutput:
        r = self.config.retrieval
        return iterative_retrieval(
            emb,
            mask,
            tau=r.tau,
            mode=mode,
            generator=list(generators),
            query=query,
            greedy=r.greedy,
            gumbel=gumbel,
            counts=counts,
            loop=self.retrieval_loop,
        )

    def select_pixels(self, out: RetrievalOutput, ids: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """(B, N, 3, C, C): the selected patches, weighted by the (straight-through) selection weights. ``mode``: the
        retrieval's (hard: one nonzero weight per object, at ``out.index``: only those patches are gathered)."""
        return self.bank.select(out.weights, ids, out.index if mode == "hard" else None)

    @staticmethod
    def chosen_ids(out: RetrievalOutput, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) bank id of the selected candidate of each slot (-1: none)."""
        chosen = ids.gather(2, out.index.clamp(min=0)[..., None]).squeeze(2)
        return torch.where(out.index >= 0, chosen, torch.full_like(chosen, -1))

    def gt_query_slots(self, rows: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(B,) slot of the object whose ground-truth patch is the L_gt query (random: from each image's generator)."""
        counts = (rows >= 0).sum(1)
        if self.config.gt_query == "first":
            return torch.zeros_like(counts)
        u = per_image_uniform(generators, [1] * len(generators), 1, rows.device)[:, 0]
        return (u * counts).long().clamp(max=(counts - 1).clamp(min=0))

    # --- losses ---
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        cfg = self.config
        host = self.with_host_inputs(batch, "candidate_ids").extras  # host_prepare's index tensors and counts
        rows, ids = host["slot_rows"], host["candidate_ids"]  # (B, N), (B, N, k)
        mask = ids >= 0
        k = ids.shape[2]
        # one E_p pass over the candidates and the ground-truth patches (the retrieval uses the first k columns)
        emb_all = nets["retriever"](host["embed_rows"], host["embed_index"])
        out = self.retrieve(
            emb_all[:, :, :k], mask, ctx.generators, cfg.retrieval.mode, cfg.retrieval.gumbel, counts=host["counts"]
        )
        selected = slots_to_objects(self.select_pixels(out, ids, cfg.retrieval.mode), batch)  # (O, 3, C, C)
        gt_crops = self.bank.crops(batch.patch_ids)  # (O, 3, C, C), zeros for image nodes
        gen = nets["generator"](
            batch.objs, batch.triples, batch.obj_to_img, batch.num_images, batch.boxes, [selected, gt_crops]
        )
        fake, recon = gen["images"]
        terms = losses.LossSum()
        self.box_term(terms, batch, gen["boxes"])
        self.reconstruction_terms(terms, batch, recon, gt_crops, ctx.pixel_weights)
        self.adversarial_terms(terms, nets, batch, fake)
        if cfg.adversarial_on_reconstruction:
            self.adversarial_terms(terms, nets, batch, recon, "_rec")
        cache: dict[str, Any] = {}
        if cfg.composite_adv_weight > 0:  # the retrieved patches' composite: E_p's only route into this term
            comp_fake = self.composite(batch, selected)
            terms.add(
                "adv_comp",
                losses.generator_adversarial(nets["d_comp"](comp_fake), cfg.gan_loss),
                cfg.composite_adv_weight,
            )
            cache.update(comp_fake=comp_fake.detach(), comp_real=self.composite(batch, gt_crops).detach())
        groups = {"generation": terms.total}  # every term so far: E_p's only route into them is the selected path
        if cfg.cooccurrence and cfg.occur_sel_weight > 0:
            groups["occur_sel"] = cfg.occur_sel_weight * cooccurrence_loss(
                out.select(host["cooccur"]), mask.any(-1), cfg.occur_form
            )
            terms.add("occur_sel", groups["occur_sel"])
        if cfg.gt_selection and cfg.gt_sel_weight > 0:  # drawn last from each image's generators (others unaffected)
            ids_gt, gt_pos = host["gt_ids"], host["gt_position"]  # (B, N, k + 1), (B, N)
            slots = self.gt_query_slots(rows, ctx.generators)
            arange = torch.arange(rows.shape[0], device=rows.device)
            query = emb_all[arange, slots, gt_pos[arange, slots].clamp(min=0)]
            out_gt = self.retrieve(
                emb_all,
                ids_gt >= 0,
                ctx.generators,
                cfg.retrieval.mode,
                cfg.retrieval.gumbel,
                query=query,
                counts=host["gt_counts"],
            )
            include = (rows >= 0) & (torch.arange(rows.shape[1], device=rows.device)[None] != slots[:, None])
            groups["gt_sel"] = cfg.gt_sel_weight * gt_selection_loss(out_gt, gt_pos, include)
            terms.add("gt_sel", groups["gt_sel"])
        meta = (
            self.trace(nets["retriever"], groups, out, emb_all[:, :, :k], mask)
            if ctx.log_step and cfg.trace_retriever
            else {}
        )
        recon_cache = recon.detach() if cfg.adversarial_on_reconstruction else None
        return StepOutput(
            terms.result(), terms.logs, cache={"fake": fake.detach(), "recon": recon_cache, **cache}, meta=meta
        )

    def trace(
        self,
        retriever: nn.Module,
        groups: Mapping[str, torch.Tensor],
        out: RetrievalOutput,
        emb: torch.Tensor,
        mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Diagnostics of one step for losses.jsonl ``meta`` (claim C1: does the generation loss reach E_p?).

        * ``ep_grad/<group>``: L2 norm of the gradient of a weighted loss group w.r.t. E_p's parameters, for
          ``generation`` (every term before the retrieval losses: adversarial + auxiliary classification on the
          retrieved-patch image; box and reconstruction terms do not depend on E_p), ``occur_sel``, ``gt_sel``,
          and ``ep_grad/total`` (their sum: what the optimiser step gets). ``torch.autograd.grad`` with the graph
          kept, so the update itself is unchanged. Left out when E_p is frozen or under DDP (whose reducer expects
          one backward pass).
        * ``retrieval/entropy_ratio``: mean over objects of the entropy of the object's selection distribution
          (``out.probs``) divided by log(its number of candidates): 1 = uniform, 0 = deterministic.
        * ``retrieval/score_std``: mean over objects of the std, over its candidates, of the score -||q - E_p(p)|| /
          tau for the initial query; the Gumbel noise added to it has std pi / sqrt(6) = 1.28.
        ``emb`` ``(B, N, K, D)``: the retrieval's candidate embeddings, ``mask`` ``(B, N, K)``: real candidates.
        """
        meta: dict[str, torch.Tensor] = {}
        params = [p for p in retriever.parameters() if p.requires_grad]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if params and not distributed:
            vectors = {}
            for name, loss in groups.items():
                if loss is None or not loss.requires_grad:
                    continue
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                vectors[name] = torch.cat(
                    [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
                )
                meta[f"ep_grad/{name}"] = vectors[name].norm().detach()
            if vectors:
                meta["ep_grad/total"] = torch.stack(list(vectors.values())).sum(0).norm().detach()
        with torch.no_grad():
            valid = out.index >= 0  # (B, N)
            cand = mask.bool()
            p = out.probs.clamp(min=1e-30)
            entropy = -(out.probs * p.log()).sum(-1)
            count = cand.sum(-1).clamp(min=2).to(p.dtype)
            ratio = entropy / count.log()
            dist = torch.linalg.vector_norm(emb - out.query[:, None, None, :], dim=-1) / self.config.retrieval.tau
            mean = (dist * cand).sum(-1) / count
            std = (((dist - mean[..., None]) ** 2 * cand).sum(-1) / count).sqrt()
            if bool(valid.any()):
                meta["retrieval/entropy_ratio"] = ratio[valid].mean()
                meta["retrieval/score_std"] = std[valid].mean()
        return meta

    # --- inference ---
    def sample_retrieval(
        self,
        nets: Mapping[str, nn.Module],
        batch: SceneGraphBatch,
        generators: Sequence[torch.Generator],
        mode: str = "hard",
    ) -> tuple[torch.Tensor, torch.Tensor, RetrievalOutput]:
        """The retrieval of ``sample`` on a batch: (candidate ids (B, N, k), mask (B, N, k), output) in ``mode``
        (sampling: hard; ``mode="relaxed"`` measures eq. 4's group masses of the trained E_p)."""
        host = self.with_host_inputs(batch, "candidate_ids").extras
        ids = host["candidate_ids"]
        mask = ids >= 0
        return (
            ids,
            mask,
            self.retrieve(
                self.embed(nets["retriever"], ids),
                mask,
                generators,
                mode,
                self.config.sample_gumbel,
                counts=host["counts"],
            ),
        )

    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        check_settings(self, setting)
        ids, _, out = self.sample_retrieval(nets, batch, generators, "hard")
        chosen = self.chosen_ids(out, ids)  # (B, N)
        crops = slots_to_objects(self.bank.crops(chosen), batch)
        images = self.render(nets["generator"], batch, crops, setting)
        return SampleOutput(images=images, patch_ids=slot_lists(chosen, batch))
