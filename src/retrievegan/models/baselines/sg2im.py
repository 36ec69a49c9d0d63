"""sg2im (Johnson et al., CVPR 2018): scene graph -> graph convolution -> boxes + masks -> layout -> CRN.

Defaults are sg2im's public ``scripts/train.py`` values (recorded beside each field). Training uses the
ground-truth boxes (and ground-truth masks when the data has them) to build the layout, as sg2im;
the box and mask regressors learn from their own losses. Sampling:

* ``pred_bbox``: predicted boxes and predicted masks (sg2im's ``pred_box_pred_mask``);
* ``gt_bbox``: ground-truth boxes with predicted masks (sg2im's ``gt_box_pred_mask``).

Deviations from sg2im's code (all recorded in the config comments): the box regressor's output is
linear (sg2im ends it with a ReLU); D_img applies its 1x1 classifier (sg2im returns CNN features);
the deprecated predicate-prediction head (weight 0 in sg2im) is omitted; switching the generator to eval
mode (``eval_mode_after``) keeps its Adam state (sg2im builds a fresh optimiser).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.errors import ConfigError
from retrievegan.models.crn import RefinementNetwork
from retrievegan.models.discriminators import SG2IM_D_ARCH, AcCropDiscriminator, PatchDiscriminator
from retrievegan.models.graph import SceneGraphEncoder
from retrievegan.models.init import build
from retrievegan.models.layout import BoxRegressor, MaskRegressor, masks_to_layout
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import Method, Role, SampleOutput, StepContext, StepOutput


@dataclasses.dataclass(frozen=True)
class Sg2ImConfig:
    # --- generator (sg2im scripts/train.py defaults) ---
    embedding_dim: int = 128  # sg2im --embedding_dim
    gconv_dim: int = 128  # sg2im --gconv_dim
    gconv_hidden_dim: int = 512  # sg2im --gconv_hidden_dim
    gconv_num_layers: int = 5  # sg2im --gconv_num_layers (paper: 5)
    gconv_pooling: Literal["avg", "sum"] = "avg"  # sg2im
    mlp_normalization: Literal["none", "batch"] = "none"  # sg2im --mlp_normalization
    refinement_dims: tuple[int, ...] = (1024, 512, 256, 128, 64)  # sg2im --refinement_network_dims
    normalization: Literal["batch", "instance", "none"] = "batch"  # sg2im --normalization (CRN)
    activation: str = "leakyrelu-0.2"  # sg2im --activation
    layout_noise_dim: int = 32  # sg2im --layout_noise_dim
    mask_size: int = 16  # sg2im --mask_size; 0: no mask regressor (objects fill their boxes)
    mask_normalization: Literal["batch", "instance", "none"] = "batch"  # sg2im's mask net uses BatchNorm
    gt_masks_in_training: bool = True  # sg2im: the layout uses GT masks when the dataset has them
    eval_mode_after: int = 100_000  # sg2im --eval_mode_after (-1: never)
    # --- generator losses ---
    l1_pixel_weight: float = 1.0  # sg2im --l1_pixel_loss_weight
    bbox_weight: float = 10.0  # sg2im --bbox_pred_loss_weight (paper lambda_bbx 10)
    box_loss: Literal["l1", "mse"] = "l1"  # sg2im paper: L1; sg2im code: MSE
    mask_weight: float = 0.0  # sg2im --mask_loss_weight: 0 (VG, no masks); its TRAINING.md: 0.1 for COCO
    gan_loss: Literal["gan", "lsgan", "hinge"] = "gan"  # sg2im --gan_loss_type
    d_weight: float = 0.01  # sg2im --discriminator_loss_weight
    d_img_weight: float = 1.0  # sg2im --d_img_weight (G's image adversarial weight = d_weight * this)
    d_obj_weight: float = 1.0  # sg2im --d_obj_weight (G's object adversarial weight = d_weight * this)
    ac_weight: float = 0.1  # sg2im --ac_loss_weight (sg2im's code adds it to G unscaled by d_weight)
    # --- discriminators ---
    d_normalization: Literal["batch", "instance", "none"] = "batch"  # sg2im --d_normalization
    d_activation: str = "leakyrelu-0.2"  # sg2im --d_activation
    d_padding: Literal["valid", "same"] = "valid"  # sg2im --d_padding
    d_img_arch: str = SG2IM_D_ARCH  # sg2im --d_img_arch
    d_obj_arch: str = SG2IM_D_ARCH  # sg2im --d_obj_arch
    crop_size: int = 32  # sg2im --crop_size (object crops for D_obj)
    d_obj_fc_dim: int = 1024  # sg2im AcDiscriminator
    # --- optimisers (sg2im: Adam, lr 1e-4, torch's default betas, for G and both Ds) ---
    optim_generator: AdamConfig = AdamConfig()
    optim_d_img: AdamConfig = AdamConfig()
    optim_d_obj: AdamConfig = AdamConfig()

    def __post_init__(self) -> None:
        if not self.refinement_dims:
            raise ValueError("refinement_dims must not be empty")
        if self.mask_size < 0 or (self.mask_size and self.mask_size & (self.mask_size - 1)):
            raise ValueError("mask_size must be 0 or a power of two")
        if min(self.embedding_dim, self.gconv_dim, self.gconv_hidden_dim, self.crop_size) < 1:
            raise ValueError("dimensions must be positive")
        if self.layout_noise_dim < 0 or self.gconv_num_layers < 0:
            raise ValueError("layout_noise_dim and gconv_num_layers must be >= 0")


class Sg2ImOutput(NamedTuple):
    images: torch.Tensor  # (N, 3, S, S)
    boxes: torch.Tensor  # (O, 4) predicted boxes
    mask_logits: torch.Tensor | None  # (O, M, M)
    obj_vecs: torch.Tensor  # (O, D) graph-convolution output


class Sg2ImGenerator(nn.Module):
    """Scene graph -> image.

    forward(objs (O,), triples (T, 3), obj_to_img (O,), num_images N, noise (N, Z, S, S) or None,
    boxes (O, 4) or None [None: predicted], masks (O, M, M) or None [None: predicted], positions (O,) rank of
    each object in its image and max_objects (host int) [the batch's ``object_index`` / ``max_objects``; None:
    computed, a host synchronisation on a GPU]) -> Sg2ImOutput.
    """

    def __init__(self, cfg: Sg2ImConfig, spec: DataSpec):
        super().__init__()
        self.image_size = spec.image_size
        self.noise_dim = cfg.layout_noise_dim
        self.encoder = SceneGraphEncoder(
            spec.num_objects,
            spec.num_predicates,
            cfg.embedding_dim,
            cfg.gconv_dim,
            cfg.gconv_hidden_dim,
            cfg.gconv_num_layers,
            cfg.gconv_pooling,
            cfg.mlp_normalization,
        )
        self.box_net = BoxRegressor(cfg.gconv_dim, cfg.gconv_hidden_dim, cfg.mlp_normalization)
        self.mask_net = MaskRegressor(cfg.gconv_dim, cfg.mask_size, cfg.mask_normalization) if cfg.mask_size else None
        self.crn = RefinementNetwork(
            cfg.gconv_dim + cfg.layout_noise_dim, cfg.refinement_dims, cfg.normalization, cfg.activation
        )

    def forward(
        self,
        objs: torch.Tensor,
        triples: torch.Tensor,
        obj_to_img: torch.Tensor,
        num_images: int,
        noise: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        max_objects: int | None = None,
    ) -> Sg2ImOutput:
        obj_vecs, _ = self.encoder(objs, triples)
        boxes_pred = self.box_net(obj_vecs)
        mask_logits = self.mask_net(obj_vecs) if self.mask_net is not None else None
        layout_boxes = boxes_pred if boxes is None else boxes
        layout_masks = masks
        if layout_masks is None and mask_logits is not None:
            layout_masks = mask_logits.sigmoid()
        layout = masks_to_layout(
            obj_vecs,
            layout_boxes,
            layout_masks,
            obj_to_img,
            num_images,
            self.image_size,
            positions=positions,
            max_objects=max_objects,
        )
        if self.noise_dim:
            expected = (num_images, self.noise_dim, self.image_size, self.image_size)
            if noise is None or tuple(noise.shape) != expected:
                raise ValueError(
                    f"noise must have shape {expected}, got {None if noise is None else tuple(noise.shape)}"
                )
            layout = torch.cat([layout, noise.to(layout.dtype)], dim=1)
        return Sg2ImOutput(self.crn(layout), boxes_pred, mask_logits, obj_vecs)


class Sg2ImMethod(Method):
    name = "sg2im"
    config_class = Sg2ImConfig
    settings = ("pred_bbox", "gt_bbox")
    supports_rarity_loss = True  # rarity.loss weights the pixel L1 (sg2im has no perceptual loss)

    def __init__(self, config: Sg2ImConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        scale = 2 ** len(config.refinement_dims)
        if spec.image_size % scale:
            raise ConfigError(
                f"sg2im: image size {spec.image_size} is not divisible by 2^{len(config.refinement_dims)}"
                " (one halving per refinement module)"
            )
        if (
            spec.mask_size
            and config.mask_size
            and spec.mask_size != config.mask_size
            and (config.mask_weight > 0 or config.gt_masks_in_training)
        ):
            raise ConfigError(f"sg2im: mask_size {config.mask_size} differs from the data's {spec.mask_size}")

    # --- networks ---
    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        cfg, spec = self.config, self.spec
        nets: dict[str, nn.Module] = {"generator": build(lambda: Sg2ImGenerator(cfg, spec), generator)}
        if cfg.d_weight > 0 and cfg.d_img_weight > 0:
            nets["d_img"] = build(
                lambda: PatchDiscriminator(cfg.d_img_arch, 3, cfg.d_normalization, cfg.d_activation, cfg.d_padding),
                generator,
            )
        if cfg.d_weight > 0 and (cfg.d_obj_weight > 0 or cfg.ac_weight > 0):
            nets["d_obj"] = build(
                lambda: AcCropDiscriminator(
                    spec.num_objects,
                    cfg.d_obj_arch,
                    cfg.crop_size,
                    cfg.d_normalization,
                    cfg.d_activation,
                    cfg.d_padding,
                    cfg.d_obj_fc_dim,
                ),
                generator,
            )
        return nets

    def roles(self) -> Mapping[str, Role]:
        cfg = self.config
        roles: dict[str, Role] = {"generator": "generator"}
        if cfg.d_weight > 0 and cfg.d_img_weight > 0:
            roles["d_img"] = "discriminator"
        if cfg.d_weight > 0 and (cfg.d_obj_weight > 0 or cfg.ac_weight > 0):
            roles["d_obj"] = "discriminator"
        return roles

    def optimizer(self, network: str) -> AdamConfig:
        return {
            "generator": self.config.optim_generator,
            "d_img": self.config.optim_d_img,
            "d_obj": self.config.optim_d_obj,
        }[network]

    def train_modes(self, nets: Mapping[str, nn.Module], step: int) -> None:
        super().train_modes(nets, step)
        if 0 <= self.config.eval_mode_after <= step:
            nets["generator"].eval()

    # --- helpers ---
    def noise(self, batch: SceneGraphBatch, generators: Sequence[torch.Generator]) -> torch.Tensor | None:
        """(N, Z, S, S) standard normal noise, image n drawn from ``generators[n]``."""
        if not self.config.layout_noise_dim:
            return None
        if len(generators) != batch.num_images:
            raise ValueError(f"{len(generators)} generators for {batch.num_images} images")
        size = self.spec.image_size
        shape = (self.config.layout_noise_dim, size, size)
        device = batch.images.device
        return torch.stack([torch.randn(shape, generator=g, device=device) for g in generators])

    def _run(
        self,
        generator: nn.Module,
        batch: SceneGraphBatch,
        noise: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> Sg2ImOutput:
        return generator(
            batch.objs,
            batch.triples,
            batch.obj_to_img,
            batch.num_images,
            noise,
            boxes,
            masks,
            positions=batch.object_index,
            max_objects=batch.max_objects,
        )

    # --- losses ---
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        cfg = self.config
        gt_masks = batch.masks if cfg.gt_masks_in_training and cfg.mask_size else None
        out = self._run(nets["generator"], batch, self.noise(batch, ctx.generators), batch.boxes, gt_masks)
        terms = losses.LossSum()
        terms.add("l1_pixel", losses.pixel_l1(out.images, batch.images, ctx.pixel_weights), cfg.l1_pixel_weight)
        terms.add("bbox", losses.box_regression(out.boxes, batch.boxes, cfg.box_loss), cfg.bbox_weight)
        if cfg.mask_weight > 0 and batch.masks is not None and out.mask_logits is not None:
            terms.add("mask", losses.mask_bce(out.mask_logits, batch.masks), cfg.mask_weight)
        if "d_obj" in nets:
            scores, class_logits = nets["d_obj"](out.images, batch.boxes, batch.obj_to_img)
            terms.add("ac_obj", losses.auxiliary_classification(class_logits, batch.objs), cfg.ac_weight)
            terms.add("adv_obj", losses.generator_adversarial(scores, cfg.gan_loss), cfg.d_weight * cfg.d_obj_weight)
        if "d_img" in nets:
            terms.add(
                "adv_img",
                losses.generator_adversarial(nets["d_img"](out.images), cfg.gan_loss),
                cfg.d_weight * cfg.d_img_weight,
            )
        return StepOutput(terms.result(), terms.logs, cache=out.images.detach())

    def discriminator_step(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any, ctx: StepContext
    ) -> StepOutput | None:
        fake, kind = cache, self.config.gan_loss
        terms = losses.LossSum()
        if "d_obj" in nets:
            d_obj = nets["d_obj"]
            fake_scores, fake_logits = d_obj(fake, batch.boxes, batch.obj_to_img)
            real_scores, real_logits = d_obj(batch.images, batch.boxes, batch.obj_to_img)
            terms.add("obj_adv", losses.discriminator_adversarial(real_scores, fake_scores, kind))
            terms.add("obj_ac_real", losses.auxiliary_classification(real_logits, batch.objs))
            terms.add("obj_ac_fake", losses.auxiliary_classification(fake_logits, batch.objs))
        if "d_img" in nets:
            d_img = nets["d_img"]
            fake_scores = d_img(fake)
            real_scores = d_img(batch.images)
            terms.add("img_adv", losses.discriminator_adversarial(real_scores, fake_scores, kind))
        if not terms.logs:
            return None
        return StepOutput(terms.result(), terms.logs)

    # --- inference ---
    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        if setting not in self.settings:
            raise ValueError(f"sg2im has no setting {setting!r}")
        boxes = batch.boxes if setting == "gt_bbox" else None
        out = self._run(nets["generator"], batch, self.noise(batch, generators), boxes, None)
        return SampleOutput(images=out.images)

    def predict_boxes(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        generator = nets["generator"]
        obj_vecs, _ = generator.encoder(batch.objs, batch.triples)
        return generator.box_net(obj_vecs)

    def object_features(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        obj_vecs, _ = nets["generator"].encoder(batch.objs, batch.triples)
        return obj_vecs
