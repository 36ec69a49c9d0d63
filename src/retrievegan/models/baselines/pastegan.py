"""PasteGAN (Li et al., NeurIPS 2019): semi-parametric generation from retrieved object crops.

Retrieval with a pre-defined (not learned) embedding: the candidates of an object are its nearest
training crops of the same category in the space of a pre-trained sg2im graph convolution (here: the
shared pre-filter, ``features/prefilter/candidates.npy``, nearest first, never the object's own image),
and the crop is picked among them

* **training**: uniformly among the top ``train_top`` of the object's list (its code:
  ``np.random.choice([0, 1, 2])`` over a training list whose first entry is the object's own crop; with
  ``train_pool_includes_ground_truth`` our pool is [own patch, candidate 1, ..., candidate top-1], since
  the pre-filter excludes the object's own image), drawn from the image's own ``torch.Generator``;
* **test** (``test_pick``): ``random`` (the default): uniformly among the first ``test_top`` pre-filtered
  candidates, one draw per object from the image's generator, so the two samples of a scene graph (two
  sample seeds) differ. The RetrieveGAN paper (§4.2, "Patch retrieval") describes PasteGAN as using
  *random selection*, and its Table 1 gives PasteGAN the highest DS (0.43 / 0.38), which a deterministic
  pick cannot have. ``test_top`` 10 is ours: PasteGAN's top-10 candidate lists. ``nearest``: the nearest
  candidate (its released code's test-time pick), so both samples are identical and DS is exactly 0 (no
  other randomness: its ``canvas_noise_dim`` is 0).

Generation: the shared generator (:mod:`retrievegan.models.patch_method`; the paper: RetrieveGAN "adopts a
similar architecture to PasteGAN") with PasteGAN's values (4 graph layers, 4 refiner layers, 6 canvas
residual blocks, lr 5e-4). What of PasteGAN's own published generator is *not* reproduced: its crop
refiner's flow / mask networks (here: the shared 2-D graph-convolution refiner), and its cascaded
refinement network on a full-size canvas (here: the shared up-sampling decoder from a canvas of image /
2^(len(decoder_dims) - 1)); its crop selector is the shared pre-filter (above). Losses of its
``train.py``: L1 pixel on the reconstruction path (ground-truth crops), box MSE, crop matching (L1
between the crop encoder's features of the selected crops and of the generated image's crops at the
layout boxes, weight 10, no gradient stop as in its code), adversarial image / object and auxiliary
classification on both paths, perceptual on the reconstruction path (image 1.0, objects 0.5) and on the
selected path (its ``double_ploss``, 0.5).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.embed.prefilter import gather_candidates, load_candidates
from retrievegan.models.patch_method import (
    PatchMethod,
    PatchMethodConfig,
    check_settings,
    per_image_uniform,
    slot_lists,
    slot_rows,
    slots_to_objects,
)
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import SampleOutput, StepContext, StepOutput


@dataclasses.dataclass(frozen=True)
class PasteGanConfig(PatchMethodConfig):
    """The ``pastegan`` section. Defaults: PasteGAN's released code (options/coco/paste_gan_coco.yaml,
    options/opts.py, train.py)."""

    gconv_num_layers: int = 4  # PasteGAN code: 4 graph-conv layers (gconv + gconv_net of its gconv_num_layers 5 - 2)
    refiner_layers: int = 4  # PasteGAN code gconv2d_num_layers
    decoder_res_blocks: int = 6  # PasteGAN code use_canvas_res (6 residual blocks on the canvas)
    box_loss: Literal["l1", "mse"] = "mse"  # PasteGAN code: F.mse_loss
    adversarial_on_reconstruction: bool = True  # PasteGAN code: both paths go to D_img and D_obj
    eval_mode_after: int = 185_280  # PasteGAN code: 40 epochs (x 4632 steps of batch 16 on COCO-Stuff)
    p_img_weight: float = 1.0  # PasteGAN perceptual_loss_weight (reconstruction path)
    p_obj_weight: float = 0.5  # PasteGAN obj_perceptual_loss_weight (reconstruction path)
    p_sel_weight: float = 0.5  # PasteGAN double_ploss_weight (selected path vs the real image)
    crop_match_weight: float = 10.0  # PasteGAN CML_weight
    train_top: int = 3  # PasteGAN code: uniform among the first 3 of the list
    train_pool_includes_ground_truth: bool = True  # PasteGAN code: its training list starts with the own crop
    test_pick: Literal["random", "nearest"] = "random"  # RetrieveGAN paper §4.2: random selection (its code: nearest)
    test_top: int = 10  # ours: random among the first 10 candidates (PasteGAN's top-10 lists)
    optim_generator: AdamConfig = AdamConfig(lr=5e-4, betas=(0.9, 0.999))  # PasteGAN opts.py
    optim_d_img: AdamConfig = AdamConfig(lr=5e-4, betas=(0.9, 0.999))
    optim_d_obj: AdamConfig = AdamConfig(lr=5e-4, betas=(0.9, 0.999))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_top < 1 or self.test_top < 1:
            raise ValueError("train_top and test_top must be >= 1")
        if self.p_sel_weight < 0 or self.crop_match_weight < 0:
            raise ValueError("loss weights must be >= 0")


class PasteGan(PatchMethod):
    name = "pastegan"
    config_class = PasteGanConfig
    settings = ("pred_bbox", "gt_bbox")
    required_inputs = ("patches", "candidates")

    def __init__(self, config: PasteGanConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        self.candidates = torch.from_numpy(
            np.array(load_candidates(self.inputs["candidates"], max(config.train_top, config.test_top), len(self.bank)))
        )  # (P, top)

    def uses_perceptual(self) -> bool:
        return super().uses_perceptual() or self.config.p_sel_weight > 0

    # --- selection ---
    def host_prepare(self, batch: SceneGraphBatch) -> SceneGraphBatch:
        """The pools, made on the host from the CPU batch (``batch.extras``: ``slot_rows`` (B, N), ``candidate_ids``
        (B, N, top), host ``slot_counts``; :meth:`pools`): a step reads nothing from the device."""
        rows = slot_rows(batch)
        cand, counts = self.pools(rows)
        return dataclasses.replace(
            batch, extras={**batch.extras, "slot_rows": rows, "candidate_ids": cand, "slot_counts": counts}
        )

    def pools(self, rows: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(the first ``max(train_top, test_top)`` candidates of every slot (B, N, top), -1 padding, on the host;
        the number of real objects of each image) for the slots' patch ids ``rows`` (B, N) (read on the host)."""
        host = rows.cpu()
        return gather_candidates(self.candidates, host)[0], tuple((host >= 0).sum(1).tolist())

    def select(
        self,
        rows: torch.Tensor,
        generators: Sequence[torch.Generator],
        training: bool,
        pools: tuple[torch.Tensor, Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """(B, N) bank id of the crop of every slot (-1: none). rows (B, N): the objects' own patch ids (-1 padding);
        ``pools``: :meth:`pools` of ``rows`` from the batch's host side (None: made here, reading ``rows``).

        Nearest candidate (test, ``nearest``), or uniform among the pool (training: the top ``train_top``; test
        with ``random``: the first ``test_top`` candidates): image b draws one uniform per real object from
        ``generators[b]``."""
        cfg = self.config
        cand, counts = pools or self.pools(rows)
        cand = cand.to(rows.device)  # (B, N, top)
        if not training and cfg.test_pick == "nearest":
            return cand[..., 0]
        if not training:
            pool = cand[..., : cfg.test_top]
        elif cfg.train_pool_includes_ground_truth:
            pool = torch.cat([rows[..., None], cand[..., : cfg.train_top - 1]], dim=-1)
        else:
            pool = cand[..., : cfg.train_top]
        valid = pool >= 0  # a prefix of every row (candidates are padded at the end)
        count = valid.sum(-1)  # (B, N)
        u = per_image_uniform(generators, counts, rows.shape[1], rows.device)
        pick = (u * count).long().clamp(max=(count - 1).clamp(min=0))
        chosen = pool.gather(2, pick[..., None]).squeeze(2)
        return torch.where(count > 0, chosen, torch.full_like(chosen, -1))

    # --- losses ---
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        cfg = self.config
        host = self.with_host_inputs(batch, "candidate_ids").extras
        chosen = self.select(host["slot_rows"], ctx.generators, True, (host["candidate_ids"], host["slot_counts"]))
        selected = slots_to_objects(self.bank.crops(chosen), batch)
        gt_crops = self.bank.crops(batch.patch_ids)
        gen = nets["generator"](
            batch.objs,
            batch.triples,
            batch.obj_to_img,
            batch.num_images,
            batch.boxes,
            [selected, gt_crops],
            match_crops=cfg.crop_match_weight > 0,
        )
        fake, recon = gen["images"]
        terms = losses.LossSum()
        self.box_term(terms, batch, gen["boxes"])
        self.reconstruction_terms(terms, batch, recon, gt_crops, ctx.pixel_weights)
        if cfg.p_sel_weight > 0:
            terms.add("p_img_sel", self.perceptual(fake.device)(fake.float(), batch.images.float()), cfg.p_sel_weight)
        if cfg.crop_match_weight > 0:
            selected_feats, generated_feats = gen["crop_match"]
            terms.add("crop_match", F.l1_loss(generated_feats.float(), selected_feats.float()), cfg.crop_match_weight)
        self.adversarial_terms(terms, nets, batch, fake)
        if cfg.adversarial_on_reconstruction:
            self.adversarial_terms(terms, nets, batch, recon, "_rec")
        recon_cache = recon.detach() if cfg.adversarial_on_reconstruction else None
        return StepOutput(terms.result(), terms.logs, cache={"fake": fake.detach(), "recon": recon_cache})

    # --- inference ---
    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        check_settings(self, setting)
        host = self.with_host_inputs(batch, "candidate_ids").extras
        chosen = self.select(host["slot_rows"], generators, False, (host["candidate_ids"], host["slot_counts"]))
        crops = slots_to_objects(self.bank.crops(chosen), batch)
        images = self.render(nets["generator"], batch, crops, setting)
        return SampleOutput(images=images, patch_ids=slot_lists(chosen, batch))
