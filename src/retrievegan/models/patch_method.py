"""What RetrieveGAN and PasteGAN share: the generator on selected patches, the discriminators, the losses
other than the retrieval losses, the patch bank, and the object <-> slot bookkeeping.

Both methods select one bank patch per real object and generate twice per training step with one
encoding of the scene graph (PasteGAN's two paths, which RetrieveGAN adopts):

* **selected path**: the selected (retrieved) patches at the ground-truth boxes -> ``fake``; the
  adversarial (D_img, D_obj) and auxiliary-classification losses (and, for RetrieveGAN, through the
  straight-through selection, the gradients that train the retrieval);
* **reconstruction path**: each object's own (ground-truth) patch at the ground-truth boxes ->
  ``recon``; L1 reconstruction of the real image (paper §3.5) and the perceptual losses on image and
  object level (PasteGAN's code applies them to this path: they need the real image as target); with
  ``adversarial_on_reconstruction`` (PasteGAN's code) also the adversarial / AC losses.

Boxes: the generator always trains with the ground-truth boxes (paper: "given the ground-truth patches
and the ground-truth bounding box coordinates"; PasteGAN's code feeds ``boxes_gt``); the box regressor
learns from the box loss only. Sampling uses predicted boxes (``pred_bbox``) or the ground truth
(``gt_bbox``).

Slots: the real objects of image ``b`` are objects ``0..n_b-1`` of its scene graph (``__image__`` is
last), so per-image tensors ``(B, N, ...)`` index object ``j`` of image ``b`` at ``[b, j]``
(:func:`object_slots`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from retrievegan import io
from retrievegan.data.dataset import IMAGENET_MEAN, IMAGENET_STD, DataSpec, SceneGraphBatch
from retrievegan.errors import ConfigError, InputError
from retrievegan.models.discriminators import AcCropDiscriminator, PatchDiscriminator
from retrievegan.models.generation import CropEncoder, CropRefiner, Decoder, ObjectImageFuser, PatchSceneGenerator
from retrievegan.models.graph import SceneGraphEncoder
from retrievegan.models.init import build
from retrievegan.models.layout import BoxRegressor, crop_boxes
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import Method, Role, StepContext, StepOutput, as_is

PASTEGAN_D_ARCH = "C4-64-2,C4-128-2,C4-256-2"  # PasteGAN (= sg2im)


@dataclasses.dataclass(frozen=True)
class PatchMethodConfig:
    """Generator, discriminators and non-retrieval losses (defaults: RetrieveGAN supplement, else PasteGAN's code)."""

    # --- scene-graph encoder E + box regressor (sg2im / PasteGAN code) ---
    embedding_dim: int = 128  # PasteGAN code
    gconv_dim: int = 128  # PasteGAN code
    gconv_hidden_dim: int = 512  # PasteGAN code
    gconv_num_layers: int = 5  # RetrieveGAN supplement: 5 layers
    gconv_pooling: Literal["avg", "sum"] = "avg"  # RetrieveGAN supplement: average pooling
    mlp_normalization: Literal["none", "batch"] = "none"  # PasteGAN code
    # --- image generation (supplement §3: crop encoder, object^2 refiner, object-image fuser, decoder) ---
    crop_encoder_arch: str = "C3-64-2,C3-128-2,C3-256-2"  # PasteGAN code (32 px crops -> 4 x 4 maps)
    crop_dim: int = 128  # D_c, PasteGAN code crop_embedding_dim
    refiner_layers: int = 2  # RetrieveGAN supplement: 2 graph-conv layers
    refiner_hidden_dim: int = 512  # PasteGAN code (its 2-D graph conv hidden width = gconv_hidden_dim)
    attention_dim: int = 256  # fuser f, h output width (PasteGAN code: 2 x gconv_dim)
    lambda_a: float = 1.0  # canvas L = lambda_a a + u_img (paper silent; PasteGAN code w_attn = 1)
    decoder_dims: tuple[int, ...] = (512, 256, 128, 64)  # ours: canvas = image / 2^(len - 1)
    decoder_res_blocks: int = 0  # residual blocks at canvas resolution (PasteGAN code: 6)
    normalization: Literal["batch", "instance", "none"] = "batch"  # PasteGAN code
    activation: str = "leakyrelu-0.1"  # PasteGAN code
    eval_mode_after: int = -1  # steps after which the generator runs in eval mode (-1: never)
    # --- discriminators (PasteGAN code = sg2im) ---
    d_normalization: Literal["batch", "instance", "none"] = "batch"
    d_activation: str = "leakyrelu-0.1"  # PasteGAN code
    d_padding: Literal["valid", "same"] = "valid"
    d_img_arch: str = PASTEGAN_D_ARCH
    d_obj_arch: str = PASTEGAN_D_ARCH
    d_obj_crop_size: int = 32  # PasteGAN object_size
    d_obj_fc_dim: int = 1024  # sg2im AcDiscriminator
    gan_loss: Literal["gan", "lsgan", "hinge"] = "gan"  # PasteGAN code
    # --- loss weights (RetrieveGAN supplement) ---
    recon_img_weight: float = 1.0  # lambda_recon^img
    p_img_weight: float = 1.0  # lambda_p^img (VGG perceptual, reconstruction path vs the real image)
    p_obj_weight: float = 0.5  # lambda_p^obj (VGG perceptual, reconstructed object crops vs their patches)
    adv_img_weight: float = 0.01  # lambda_adv^img
    adv_obj_weight: float = 0.01  # lambda_adv^obj
    ac_obj_weight: float = 0.1  # lambda_ac^obj
    bbox_weight: float = 10.0  # lambda_bbx
    box_loss: Literal["l1", "mse"] = "l1"  # paper: L1 (PasteGAN code: MSE)
    adversarial_on_reconstruction: bool = False  # also feed the reconstruction path to D (PasteGAN code: yes)
    perceptual_weights: str | None = None  # VGG-19 file; None: <torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth
    # --- optimisers (RetrieveGAN supplement: Adam, lr G 2.5e-4, D 1e-3, betas (0, 0.9)) ---
    optim_generator: AdamConfig = AdamConfig(lr=2.5e-4, betas=(0.0, 0.9))
    optim_d_img: AdamConfig = AdamConfig(lr=1e-3, betas=(0.0, 0.9))
    optim_d_obj: AdamConfig = AdamConfig(lr=1e-3, betas=(0.0, 0.9))

    def __post_init__(self) -> None:
        if not self.decoder_dims:
            raise ValueError("decoder_dims must not be empty")
        for name in (
            "embedding_dim",
            "gconv_dim",
            "gconv_hidden_dim",
            "crop_dim",
            "refiner_hidden_dim",
            "attention_dim",
            "d_obj_crop_size",
            "d_obj_fc_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.gconv_num_layers < 0 or self.refiner_layers < 0 or self.decoder_res_blocks < 0:
            raise ValueError("layer counts must be >= 0")
        for name in (
            "recon_img_weight",
            "p_img_weight",
            "p_obj_weight",
            "adv_img_weight",
            "adv_obj_weight",
            "ac_obj_weight",
            "bbox_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


# --- patch bank and slots ------------------------------------------------------------------------
CACHE_LIMIT_BYTES = 1 << 30  # banks whose float32 copy fits in 1 GiB are normalised once and kept in memory


class PatchBank:
    """The patch bank pixels ``(P, C, C, 3)`` uint8 (memory-mapped) as ImageNet-normalised crops.

    Small banks (float32 copy <= 1 GiB, e.g. the embedded benchmark's) are converted once; larger ones
    (the paper's 600K patches) are read and converted per call, only at the rows asked for. Both give the
    same values. For larger banks :meth:`crops` and :meth:`select` gather the uint8 pixels on the device instead
    (CPU: the memory map; CUDA: a copy when it takes at most a quarter of the GPU's memory, e.g. the paper's
    7.4 GB bank on an 80 GB GPU) and normalise only the rows they gather: no host round trip, no synchronisation.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pixels = io.load_array(self.path, "patch bank not found (run `retrievegan patches`)")
        if (
            self.pixels.ndim != 4
            or self.pixels.shape[3] != 3
            or self.pixels.dtype != np.uint8
            or self.pixels.shape[1] != self.pixels.shape[2]
        ):
            raise InputError(
                self.path, f"expected (P, C, C, 3) uint8 patches, got {self.pixels.shape} {self.pixels.dtype}"
            )
        self.size = int(self.pixels.shape[1])
        self._cache: torch.Tensor | None = None
        self._cache_ok = self.pixels.size * 4 <= CACHE_LIMIT_BYTES
        self._device_pixels: torch.Tensor | None = None  # (P, C*C*3) uint8 on the device (crops)
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def row_size(self) -> int:
        return 3 * self.size * self.size

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,) scale and shift of the normalisation on ``device`` (made once per device)."""
        if device not in self._norm:  # computed on the host, copied once (non-blocking: no wait for the device)
            std = torch.tensor(IMAGENET_STD)
            scale, shift = 1.0 / (255.0 * std), -torch.tensor(IMAGENET_MEAN) / std
            self._norm[device] = (scale.to(device, non_blocking=True), shift.to(device, non_blocking=True))
        return self._norm[device]

    def _normalise(self, pixels: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        """(R, C, C, 3) uint8 -> (R, C * C * 3) float32 ImageNet-normalised, channels last."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(np.array(pixels)).to(device)
        return normalise_pixels(pixels, *self._scale_shift(device))

    def _check(self, ids: torch.Tensor) -> None:
        """Every id is a bank row (checked on the device: no host synchronisation)."""
        if ids.numel():
            torch._assert_async(ids.max() < len(self), f"{self.path}: a patch id is outside the bank of {len(self)}")

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values (U, C*C*3), index)``: normalised channels-last rows and ``ids``' positions in them (-1 kept)."""
        self._check(ids)
        if self._cache_ok:
            if self._cache is None or self._cache.device != ids.device:
                self._cache = self._normalise(np.asarray(self.pixels), ids.device)
            return self._cache, ids
        valid = ids >= 0
        uniq, inverse = torch.unique(ids[valid], return_inverse=True)
        index = torch.full_like(ids, -1)
        index[valid] = inverse
        return self._normalise(self.pixels[uniq.cpu().numpy()], ids.device), index

    def to_crops(self, flat: torch.Tensor) -> torch.Tensor:
        """(..., C*C*3) channels-last rows -> (..., 3, C, C)."""
        lead = tuple(flat.shape[:-1])
        return flat.reshape(lead + (self.size, self.size, 3)).movedim(-1, -3)

    def device_pixels(self, device: torch.device) -> torch.Tensor | None:
        """The bank's uint8 pixels ``(P, C*C*3)`` on ``device``: on the CPU the memory map itself (no copy, pages
        read when gathered), on a GPU a copy when it takes at most a quarter of its memory (else None)."""
        if self._device_pixels is not None and self._device_pixels.device == device:
            return self._device_pixels
        flat = self.pixels.reshape(len(self), -1)
        if device.type == "cpu":
            with warnings.catch_warnings():  # a read-only memory map: never written to
                warnings.simplefilter("ignore", UserWarning)
                self._device_pixels = torch.from_numpy(flat)
        elif self.pixels.size <= torch.cuda.get_device_properties(device).total_memory // 4:
            self._device_pixels = torch.from_numpy(np.ascontiguousarray(flat)).to(device)
        else:
            return None
        return self._device_pixels

    def crops(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) int64 bank rows (-1: none) -> (..., 3, C, C) float32 ImageNet-normalised (zeros for -1). From
        the normalised cache (small banks) or the device pixels: gathers without a host synchronisation."""
        flat = ids.reshape(-1)
        pixels = None if self._cache_ok else self.device_pixels(ids.device)
        if self._cache_ok or pixels is not None:
            self._check(ids)
            if self._cache_ok:
                values = self.rows(ids)[0].index_select(0, flat.clamp(min=0))
            else:
                values = self._normalise(pixels.index_select(0, flat.clamp(min=0)), ids.device)
            out = torch.where((flat >= 0).unsqueeze(1), values, torch.zeros_like(values))
            return self.to_crops(out.view(tuple(ids.shape) + (values.shape[1],)))
        values, index = self.rows(ids)
        flat = index.reshape(-1)
        out = values.new_zeros((flat.shape[0], values.shape[1]))
        valid = flat >= 0
        out[valid] = values[flat[valid]]
        return self.to_crops(out.view(tuple(ids.shape) + (values.shape[1],)))

    def select(
        self, weights: torch.Tensor, ids: torch.Tensor, column: torch.Tensor | None = None, sparse: bool | None = None
    ) -> torch.Tensor:
        """Weighted patches: weights (B, N, K) over candidate ids (B, N, K) -> (B, N, 3, C, C), differentiable
        in ``weights`` (:class:`WeightedRows`; the gradient of every weight is its patch's dot product with the
        output gradient). ``column`` (B, N): the only column of each row whose weight may be nonzero (a hard
        retrieval's one-hot forward pass), so that only those patches are gathered; None: any weights. From the
        normalised cache when the bank is small, else from the device pixels, normalised as gathered (the same
        values, no host round trip). ``sparse`` (default: on the CPU, where there is no device to wait for): without
        ``column``, gather only the nonzero weights' patches (``nonzero``: a host synchronisation on a GPU; soft /
        relaxed weights are mostly exact zeros, so on the CPU this is much faster than gathering every candidate)."""
        self._check(ids)
        sparse = weights.device.type == "cpu" if sparse is None else sparse
        pixels = None if self._cache_ok else self.device_pixels(ids.device)
        if pixels is not None:
            scale, shift = self._scale_shift(ids.device)
            return self.to_crops(WeightedRows.apply(weights, pixels, ids, scale, shift, column, sparse))
        values, index = self.rows(ids)
        return self.to_crops(WeightedRows.apply(weights, values, index, None, None, column, sparse))


def normalise_pixels(pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(R, C * C * 3) or (R, C, C, 3) uint8 -> (R, C * C * 3) float32 ``pixels * scale + shift`` per channel
    (channels last: ImageNet-normalised patches)."""
    x = pixels.float().view(pixels.shape[0], -1, 3).mul_(scale).add_(shift)
    return x.reshape(x.shape[0], -1)


SELECT_BACKWARD_BYTES = (
    4 << 20
)  # WeightedRows.backward gathers at most this many bytes of patch rows at once (cache-sized:
# one 48 MB gather costs page faults; benchmarks/bench_patch_select.py)


class WeightedRows(torch.autograd.Function):
    """out[b, n] = sum_k weights[b, n, k] * values[index[b, n, k]] (index -1: nothing). weights (B, N, K), values
    (U, X) constant, index (B, N, K) -> (B, N, X). With ``scale`` / ``shift`` the values are uint8 pixel rows,
    normalised as they are gathered (:func:`normalise_pixels`).

    Forward: with ``column`` (B, N) (the one column of each row whose weight may be nonzero, e.g. a hard
    retrieval's one-hot weights) only those B * N rows are gathered; without it all B * N * K rows, summed in
    column order (the zero weights add exact zeros: the same sums as gathering only the nonzero ones). Neither
    pass reads the device on the host (no ``nonzero``: no synchronisation). ``sparse`` (without ``column``): gather
    only the nonzero weights' rows instead (``nonzero``: one synchronisation; the same sums, bit for bit)."""

    @staticmethod
    def forward(
        ctx,
        weights: torch.Tensor,
        values: torch.Tensor,
        index: torch.Tensor,  # type: ignore[override]
        scale: torch.Tensor | None,
        shift: torch.Tensor | None,
        column: torch.Tensor | None = None,
        sparse: bool = False,
    ) -> torch.Tensor:
        b, n, k = weights.shape
        ctx.save_for_backward(values, index, *(() if scale is None else (scale, shift)))
        if sparse and column is None:  # the nonzero weights only, summed in column order
            flat_w, flat_i = weights.reshape(-1), index.reshape(-1)
            pos = torch.nonzero((flat_w != 0) & (flat_i >= 0)).squeeze(1)
            picked = WeightedRows.rows(values, flat_i[pos], scale, shift)
            rows = torch.div(pos, k, rounding_mode="floor")
            out = picked.new_zeros((b * n, picked.shape[1])).index_add_(
                0, rows, flat_w[pos, None].to(picked.dtype) * picked
            )
            return out.view(b, n, -1)
        if column is not None:  # one candidate per row
            col = column.clamp(min=0).unsqueeze(2)
            flat_w, flat_i = weights.gather(2, col).reshape(-1), index.gather(2, col).reshape(-1)
        else:
            flat_w, flat_i = weights.reshape(-1), index.reshape(-1)
        picked = WeightedRows.rows(values, flat_i.clamp(min=0), scale, shift)
        used = ((flat_w != 0) & (flat_i >= 0)).unsqueeze(1)
        terms = torch.where(used, flat_w.unsqueeze(1).to(picked.dtype) * picked, 0.0)
        if column is None:  # row sums in column order, from 0 (index_add_: as many terms per row as columns)
            rows = torch.div(torch.arange(b * n * k, device=weights.device), k, rounding_mode="floor")
            terms = picked.new_zeros((b * n, picked.shape[1])).index_add_(0, rows, terms)
        return terms.view(b, n, -1)

    @staticmethod
    def rows(
        values: torch.Tensor, index: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None
    ) -> torch.Tensor:
        return values[index] if scale is None else normalise_pixels(values.index_select(0, index), scale, shift)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        values, index, *norm = ctx.saved_tensors
        scale, shift = norm if norm else (None, None)
        b, n, k = index.shape
        g = grad.reshape(b * n, 1, -1)
        idx = index.reshape(b * n, k)
        step = max(1, SELECT_BACKWARD_BYTES // max(1, b * n * g.shape[2] * 4))  # candidate columns per gather
        dots = []
        for j in range(0, k, step):  # usually one pass: all (B*N, K, X) rows at once; -1 entries get 0 (no sync)
            cols = idx[:, j : j + step]
            picked = WeightedRows.rows(values, cols.clamp(min=0).reshape(-1), scale, shift)
            dots.append((picked.view(b * n, cols.shape[1], -1) * g).sum(-1))  # each row's own dot product
        dot = dots[0] if len(dots) == 1 else torch.cat(dots, dim=1)
        return torch.where(idx >= 0, dot, 0.0).view(b, n, k), None, None, None, None, None, None


def load_rows(path: str | Path, num_rows: int, what: str, dtype_kind: str = "f") -> np.ndarray:
    """A memory-mapped ``(P, D)`` array aligned with the patch bank (``num_rows`` rows)."""
    array = io.load_array(path, f"{what} not found")
    if array.ndim != 2 or array.dtype.kind != dtype_kind:
        raise InputError(path, f"expected a (P, D) {what} array, got {array.shape} {array.dtype}")
    if len(array) != num_rows:
        raise InputError(path, f"{len(array)} rows but the patch bank has {num_rows}")
    return array


def object_slots(batch: SceneGraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(real rows (R,), image (R,), slot (R,), N): the real objects and their (image, slot) positions; N = the
    largest number of real objects of an image (>= 1). From the batch's host counts and index tensors: no host
    synchronisation."""
    real = batch.real_index()
    img, slot = batch.obj_to_img.index_select(0, real), batch.object_index.index_select(0, real)
    return real, img, slot, batch.max_real_objects


def slot_rows(batch: SceneGraphBatch) -> torch.Tensor:
    """(B, N) int64: the patch-bank row of object j of image b (``batch.patch_ids``), -1 padding."""
    real, img, slot, most = object_slots(batch)
    rows = torch.full((batch.num_images, most), -1, dtype=torch.long, device=batch.objs.device)
    return rows.index_put((img, slot), batch.patch_ids.index_select(0, real))


def slots_to_objects(values: torch.Tensor, batch: SceneGraphBatch) -> torch.Tensor:
    """values (B, N, ...) per slot -> (O, ...) in object order (zeros for the image nodes)."""
    real, img, slot, _ = object_slots(batch)
    out = values.new_zeros((batch.objs.shape[0],) + tuple(values.shape[2:]))
    return out.index_copy(0, real, values[img, slot])


def slot_lists(values: torch.Tensor, batch: SceneGraphBatch) -> list[list[int]]:
    """values (B, N) int per slot -> per image the list over its real objects (object order)."""
    counts = torch.bincount(batch.obj_to_img[batch.real_objects], minlength=batch.num_images).tolist()
    rows = values.tolist()
    return [rows[b][:n] for b, n in enumerate(counts)]


# --- the method base -----------------------------------------------------------------------------
class PatchMethod(Method):
    """Shared part of RetrieveGAN and PasteGAN (see the module docstring). Subclasses implement patch
    selection (``generator_step`` / ``sample``) and may add networks (``extra_networks``)."""

    needs_patch_ids = True
    required_inputs: tuple[str, ...] = ("patches",)  # patches.npy (the bank pixels)
    supports_rarity_loss = True  # rarity.loss weights the reconstruction path's L1 and perceptual losses

    def __init__(self, config: PatchMethodConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        upsamplings = len(config.decoder_dims) - 1
        canvas = spec.image_size // 2**upsamplings
        if canvas < 1 or canvas * 2**upsamplings != spec.image_size:
            raise ConfigError(
                f"{self.name}: image size {spec.image_size} is not divisible by 2^{upsamplings} "
                f"(decoder_dims has {len(config.decoder_dims)} widths: one up-sampling per width after "
                f"the first)"
            )
        self.canvas_size = canvas
        self.bank = PatchBank(self.inputs["patches"])
        self._perceptual_net: nn.Module | None = None  # loaded on first use (training only)
        self._perceptual_on: tuple[nn.Module, torch.device, nn.Module] | None = None  # (net, device, as called)
        self._compile_perceptual: Callable[[nn.Module], nn.Module] = as_is  # compile_functions

    # --- networks ---
    def uses_perceptual(self) -> bool:
        return self.config.p_img_weight > 0 or self.config.p_obj_weight > 0

    def build_generator(self) -> PatchSceneGenerator:
        cfg, spec = self.config, self.spec
        encoder = SceneGraphEncoder(
            spec.num_objects,
            spec.num_predicates,
            cfg.embedding_dim,
            cfg.gconv_dim,
            cfg.gconv_hidden_dim,
            cfg.gconv_num_layers,
            cfg.gconv_pooling,
            cfg.mlp_normalization,
        )
        box_net = BoxRegressor(cfg.gconv_dim, cfg.gconv_hidden_dim, cfg.mlp_normalization)
        crop_encoder = CropEncoder(cfg.crop_encoder_arch, cfg.crop_dim, cfg.normalization, cfg.activation)
        refiner = CropRefiner(
            cfg.crop_dim, cfg.gconv_dim, cfg.refiner_hidden_dim, cfg.refiner_layers, cfg.normalization, cfg.activation
        )
        fuser = ObjectImageFuser(
            cfg.crop_dim, cfg.gconv_dim, cfg.gconv_dim, cfg.attention_dim, self.canvas_size, cfg.lambda_a
        )
        decoder = Decoder(
            cfg.crop_dim + cfg.gconv_dim, cfg.decoder_dims, cfg.decoder_res_blocks, cfg.normalization, cfg.activation
        )
        return PatchSceneGenerator(encoder, box_net, crop_encoder, refiner, fuser, decoder, self.bank.size)

    def extra_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        """Further generator-role networks (RetrieveGAN: the patch embedding E_p)."""
        return {}

    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        cfg, spec = self.config, self.spec
        nets: dict[str, nn.Module] = {"generator": build(self.build_generator, generator)}
        nets.update(self.extra_networks(generator))
        nets["d_img"] = build(
            lambda: PatchDiscriminator(cfg.d_img_arch, 3, cfg.d_normalization, cfg.d_activation, cfg.d_padding),
            generator,
        )
        nets["d_obj"] = build(
            lambda: AcCropDiscriminator(
                spec.num_objects,
                cfg.d_obj_arch,
                cfg.d_obj_crop_size,
                cfg.d_normalization,
                cfg.d_activation,
                cfg.d_padding,
                cfg.d_obj_fc_dim,
            ),
            generator,
        )
        return nets

    def roles(self) -> Mapping[str, Role]:
        roles: dict[str, Role] = {"generator": "generator"}
        roles.update({name: "generator" for name in self.extra_network_names()})
        roles.update({"d_img": "discriminator", "d_obj": "discriminator"})
        return roles

    def extra_network_names(self) -> tuple[str, ...]:
        return ()

    def optimizer(self, network: str) -> AdamConfig:
        cfg = self.config
        if network in ("d_img", "d_obj"):
            return {"d_img": cfg.optim_d_img, "d_obj": cfg.optim_d_obj}[network]
        return cfg.optim_generator

    def train_modes(self, nets: Mapping[str, nn.Module], step: int) -> None:
        super().train_modes(nets, step)
        if 0 <= self.config.eval_mode_after <= step:
            nets["generator"].eval()

    def notes(self) -> dict[str, str]:
        """run.json notes: whether the perceptual loss ran, and why not."""
        if self.uses_perceptual():
            return {"perceptual": "vgg19 (ImageNet, torchvision layout)"}
        from retrievegan.weights import MissingWeightsError, resolve_vgg19_weights

        try:
            resolve_vgg19_weights(self.config.perceptual_weights, f"{self.name}.perceptual_weights")
        except MissingWeightsError:
            return {"perceptual": "disabled (no VGG weights offline): p_img_weight = p_obj_weight = 0"}
        return {"perceptual": "disabled: p_img_weight = p_obj_weight = 0 in the config"}

    def perceptual(self, device: torch.device) -> nn.Module:
        """The frozen VGG-19 perceptual loss (loaded on first use; missing weights: an error naming the file)."""
        if self._perceptual_net is None:
            from retrievegan.models.perceptual import load_vgg_perceptual

            self._perceptual_net = load_vgg_perceptual(
                self.config.perceptual_weights, f"{self.name}.perceptual_weights"
            )
        net, on = self._perceptual_net, self._perceptual_on
        if on is None or on[0] is not net or on[1] != device:  # moved (and compiled) once, not at every call
            net = net.to(device)
            self._perceptual_on = on = (net, device, self._compile_perceptual(net))
        return on[2]

    def compile_functions(self, compile: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """The frozen VGG-19 of the perceptual losses compiled (on its first use)."""
        self._compile_perceptual = compile
        self._perceptual_on = None

    # --- shared losses ---
    def reconstruction_terms(
        self,
        terms: losses.LossSum,
        batch: SceneGraphBatch,
        recon: torch.Tensor,
        gt_crops: torch.Tensor,
        pixel_weights: torch.Tensor | None = None,
    ) -> None:
        """L1 reconstruction + perceptual (image, object) of the reconstruction path. gt_crops (O, 3, C, C).
        ``pixel_weights`` (N, 1, S, S) (rarity.loss): weights every term per pixel; the object-level perceptual
        loss gets the mask cropped at each object's box, like the image."""
        cfg = self.config
        terms.add("recon_img", losses.pixel_l1(recon, batch.images, pixel_weights), cfg.recon_img_weight)
        if self.uses_perceptual():
            vgg = self.perceptual(recon.device)
            if cfg.p_img_weight > 0:
                terms.add("p_img", vgg(recon.float(), batch.images.float(), pixel_weights), cfg.p_img_weight)
            if cfg.p_obj_weight > 0:
                real = batch.real_index()
                boxes, owners = batch.boxes.index_select(0, real), batch.obj_to_img.index_select(0, real)
                crops = crop_boxes(recon, boxes, owners, self.bank.size)
                crop_weights = (
                    None if pixel_weights is None else crop_boxes(pixel_weights, boxes, owners, self.bank.size)
                )
                terms.add("p_obj", vgg(crops.float(), gt_crops[real].float(), crop_weights), cfg.p_obj_weight)

    def adversarial_terms(
        self,
        terms: losses.LossSum,
        nets: Mapping[str, nn.Module],
        batch: SceneGraphBatch,
        images: torch.Tensor,
        suffix: str = "",
    ) -> None:
        """Generator's adversarial (D_img, D_obj) and auxiliary-classification losses for ``images`` (N, 3, S, S)."""
        cfg = self.config
        real = batch.real_index()
        scores, class_logits = nets["d_obj"](
            images, batch.boxes.index_select(0, real), batch.obj_to_img.index_select(0, real)
        )
        terms.add(f"adv_obj{suffix}", losses.generator_adversarial(scores, cfg.gan_loss), cfg.adv_obj_weight)
        terms.add(
            f"ac_obj{suffix}",
            losses.auxiliary_classification(class_logits, batch.objs.index_select(0, real)),
            cfg.ac_obj_weight,
        )
        terms.add(
            f"adv_img{suffix}", losses.generator_adversarial(nets["d_img"](images), cfg.gan_loss), cfg.adv_img_weight
        )

    def box_term(self, terms: losses.LossSum, batch: SceneGraphBatch, boxes_pred: torch.Tensor) -> None:
        real = batch.real_index()  # the image node's box is always (0, 0, 1, 1): not a prediction target
        terms.add(
            "bbox",
            losses.box_regression(
                boxes_pred.index_select(0, real), batch.boxes.index_select(0, real), self.config.box_loss
            ),
            self.config.bbox_weight,
        )

    def discriminator_step(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any, ctx: StepContext
    ) -> StepOutput | None:
        terms = self.discriminator_terms(nets, batch, cache)
        return StepOutput(terms.result(), terms.logs)

    def discriminator_terms(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any) -> losses.LossSum:
        """D_obj: adversarial + auxiliary classification of the real crops (PasteGAN code); D_img: adversarial.
        ``cache``: {"fake": (N, 3, S, S), "recon": (N, 3, S, S) or None, ...}, detached."""
        kind = self.config.gan_loss
        real = batch.real_index()
        boxes, obj_to_img, labels = (
            batch.boxes.index_select(0, real),
            batch.obj_to_img.index_select(0, real),
            batch.objs.index_select(0, real),
        )
        fakes = [("", cache["fake"])] + ([("_rec", cache["recon"])] if cache.get("recon") is not None else [])
        terms = losses.LossSum()
        d_obj = nets["d_obj"]
        real_scores, real_logits = d_obj(batch.images, boxes, obj_to_img)
        terms.add("obj_ac_real", losses.auxiliary_classification(real_logits, labels))
        for suffix, fake in fakes:
            fake_scores, _ = d_obj(fake, boxes, obj_to_img)
            terms.add(f"obj_adv{suffix}", losses.discriminator_adversarial(real_scores, fake_scores, kind))
        d_img = nets["d_img"]
        real_img = d_img(batch.images)
        for suffix, fake in fakes:
            terms.add(f"img_adv{suffix}", losses.discriminator_adversarial(real_img, d_img(fake), kind))
        return terms

    # --- inference helpers ---
    def render(self, generator: nn.Module, batch: SceneGraphBatch, crops: torch.Tensor, setting: str) -> torch.Tensor:
        """(N, 3, S, S) images from per-object crops (O, 3, C, C) with predicted or ground-truth boxes."""
        boxes = batch.boxes if setting == "gt_bbox" else None
        return generator(batch.objs, batch.triples, batch.obj_to_img, batch.num_images, boxes, [crops])["images"][0]

    def predict_boxes(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        return nets["generator"].encode(batch.objs, batch.triples)[2]

    def object_features(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        return nets["generator"].encode(batch.objs, batch.triples)[0]


def check_settings(method: Method, setting: str) -> None:
    if setting not in method.settings:
        raise ValueError(f"{method.name} has no setting {setting!r}")


def gather_rows(array: np.ndarray | torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows of a (P, D) array (memmap or tensor) for ids (...) int64 (-1 -> zeros) -> (..., D) float32."""
    flat = ids.reshape(-1)
    valid = flat >= 0
    out = torch.zeros((flat.shape[0], array.shape[1]), dtype=torch.float32, device=ids.device)
    if bool(valid.any()):
        if isinstance(array, np.ndarray):
            rows = flat[valid].cpu().numpy()
            uniq, inverse = np.unique(rows, return_inverse=True)
            vals = torch.from_numpy(np.asarray(array[uniq], dtype=np.float32)).to(ids.device)
            out[valid] = vals[torch.from_numpy(inverse).to(ids.device)]
        else:
            out[valid] = array[flat[valid]].float()
    return out.view(tuple(ids.shape) + (array.shape[1],))


def per_image_uniform(
    generators: Sequence[torch.Generator], counts: Sequence[int], width: int, device: torch.device
) -> torch.Tensor:
    """(B, width) uniforms: image b draws ``counts[b]`` values from its own generator (the rest 0)."""
    out = torch.zeros((len(counts), width), device=device)
    for b, (gen, n) in enumerate(zip(generators, counts)):
        if n:
            out[b, :n] = torch.rand(n, generator=gen, device=device)
    return out
