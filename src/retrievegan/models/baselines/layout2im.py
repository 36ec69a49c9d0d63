"""layout2im (Zhao et al., CVPR 2019): image generation from a layout of ground-truth boxes.

layout2im takes the ground-truth boxes and categories as input (no relationships, no box prediction); the
RetrieveGAN paper evaluates it in the ground-truth-box setting only (``settings = ("gt_bbox",)``).

Architecture and losses (facts of zhaobozb/layout2im: ``models/generator.py``, ``models/discriminator.py``,
``train.py``; re-implemented):

* per object a latent code: training encodes the real object crop (``crop_size`` px) with the variational
  crop encoder (7x7 conv, strided 4x4 convs with class-conditional BatchNorm, average pooling, FC to mu and
  log-variance; ``z = mu + sigma * eps``); a second pass uses ``z ~ N(0, I)``; sampling uses only the latter;
* the layout encoder spreads ``[category embedding, z]`` over the object's box (a binary box mask at the
  image size, layout2im's rasterisation), downsamples it per object (1x1 conv, strided 4x4 convs,
  class-conditional BatchNorm), then a convolutional LSTM runs over the objects of each image (in a random
  order, as layout2im's data loader shuffles them) and its last hidden state goes through residual blocks;
* the decoder (3x3 conv, transposed 4x4 convs, 7x7 conv) renders the image;
* discriminators with spectral normalisation: an image discriminator (a residual CNN, ReLU, sum pooling,
  linear) and an object discriminator on the object crops (same trunk, real/fake and category heads);
* G loss: ``lambda_img_rec`` L1(reconstruction, real) + ``lambda_z_rec`` L1(z, encoder(crop of the z-image))
  + KL + ``lambda_img_adv`` and ``lambda_obj_adv`` (mean of the reconstruction and random-z terms) +
  ``lambda_obj_cls`` (object classification of both); D loss: image and object real/fake, object
  classification of the real crops. Adam lr 1e-4, betas (0.5, 0.999), batch 8, 300k iterations.

Deviations (ours, recorded in the config comments): the loop updates G before D (layout2im: D first);
``kl_weight`` multiplies the KL summed over an image's objects and latent dimensions and averaged over
images (layout2im: 0.01 x the sum over its batch of 8, i.e. 0.08 per image at its batch size; a per-image
mean keeps DDP and batch splits exact); the layout encoder's first 1x1 conv has no padding (layout2im pads it
by one pixel, which makes the layout 2 px larger than the image); objects of an image are the real ones
(layout2im has no ``__image__`` object).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.errors import ConfigError
from retrievegan.models.init import build
from retrievegan.models.layout import crop_boxes
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import Method, Role, SampleOutput, StepContext, StepOutput

LAYOUT2IM_ADAM = AdamConfig(lr=1e-4, betas=(0.5, 0.999))  # layout2im train.py


@dataclasses.dataclass(frozen=True)
class Layout2ImConfig:
    """The ``layout2im`` config section. Defaults: layout2im's public code (train.py, models/*.py)."""

    embedding_dim: int = 64  # layout2im --embedding_dim
    z_dim: int = 64  # layout2im --z_dim
    crop_size: int = 32  # layout2im --object_size
    crop_encoder_dims: tuple[int, ...] = (64, 128, 256, 512, 1024)  # CropEncoder (conv_dim 64): 7x7, then 4x4/2
    layout_encoder_dims: tuple[int, ...] = (64, 128, 256, 512)  # LayoutEncoder c1 (1x1), then 4x4/2 convs
    clstm_dims: tuple[int, ...] = (128, 64, 64)  # layout2im --clstm_layers 3: LayoutConvLSTM hidden dims
    clstm_kernel: int = 5  # layout2im (5, 5)
    res_blocks: int = 6  # layout2im --resi_num
    decoder_dims: tuple[int, ...] = (256, 256, 128, 64)  # Decoder: 3x3 conv, then transposed 4x4/2 convs
    shuffle_objects: bool = True  # layout2im's loader shuffles the objects (the conv-LSTM order)
    d_img_dims: tuple[int, ...] = (64, 128, 256, 512, 1024)  # ImageDiscriminator (conv_dim 64)
    d_obj_dims: tuple[int, ...] = (64, 128, 256, 512, 1024)  # ObjectDiscriminator
    spectral_norm: bool = True  # layout2im add_sn on both discriminators
    batch_discriminator_calls: bool = False  # ours (GPU speed): one D call per phase on real + fakes concatenated
    # (layout2im: one call per input; the same logits up to rounding, but one spectral-norm power iteration per
    # phase instead of one per call)
    lambda_img_rec: float = 1.0  # layout2im --lambda_img_rec (L1)
    lambda_z_rec: float = 10.0  # layout2im --lambda_z_rec
    lambda_img_adv: float = 1.0  # layout2im --lambda_img_adv
    lambda_obj_adv: float = 1.0  # layout2im --lambda_obj_adv
    lambda_obj_cls: float = 1.0  # layout2im --lambda_obj_cls
    kl_weight: float = 0.08  # layout2im: --lambda_kl 0.01 x KL summed over its batch of 8 (ours: per image)
    optim_generator: AdamConfig = LAYOUT2IM_ADAM
    optim_d_img: AdamConfig = LAYOUT2IM_ADAM
    optim_d_obj: AdamConfig = LAYOUT2IM_ADAM

    def __post_init__(self) -> None:
        if len(self.crop_encoder_dims) < 1 or len(self.layout_encoder_dims) < 1 or not self.clstm_dims:
            raise ValueError("encoder and conv-LSTM dims must not be empty")
        if len(self.decoder_dims) != len(self.layout_encoder_dims):
            raise ValueError(
                "decoder_dims must have as many entries as layout_encoder_dims (same number of "
                "upsamplings as downsamplings)"
            )
        if self.clstm_kernel % 2 == 0 or self.clstm_kernel < 1:
            raise ValueError("clstm_kernel must be odd")
        if min(self.embedding_dim, self.z_dim, self.crop_size) < 1 or self.res_blocks < 0:
            raise ValueError("embedding_dim, z_dim, crop_size must be >= 1 and res_blocks >= 0")
        if len(self.d_img_dims) < 1 or len(self.d_obj_dims) < 1:
            raise ValueError("discriminator dims must not be empty")
        weights = (
            self.lambda_img_rec,
            self.lambda_z_rec,
            self.lambda_img_adv,
            self.lambda_obj_adv,
            self.lambda_obj_cls,
            self.kl_weight,
        )
        if min(weights) < 0:
            raise ValueError("loss weights must be >= 0")


# --- spectral normalisation (explicit-generator initialisation, no global RNG) ----------------------
class _SpectralNorm:
    """Mixin: weight / sigma_max(weight), sigma from one power iteration per training forward (as
    ``torch.nn.utils.spectral_norm``); the vectors u, v are buffers initialised from the generator."""

    spectral: bool

    def _setup_spectral(self, enabled: bool) -> None:
        self.spectral = enabled
        if enabled:
            rows = self.weight.shape[0]
            cols = self.weight[0].numel()
            self.register_buffer("sn_u", torch.empty(rows))
            self.register_buffer("sn_v", torch.empty(cols))

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)  # PyTorch's default scheme
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            self.bias.uniform_(-bound, bound, generator=generator)
        if self.spectral:
            self.sn_u.copy_(F.normalize(torch.randn(self.sn_u.shape, generator=generator), dim=0, eps=1e-12))
            self.sn_v.copy_(F.normalize(torch.randn(self.sn_v.shape, generator=generator), dim=0, eps=1e-12))

    def normalized_weight(self) -> torch.Tensor:
        """weight / sigma, sigma = u^T W v after one power iteration (training), as
        ``torch.nn.utils.spectral_norm``. The backward pass must not see the buffers (the next call updates them
        in place: under ``torch.compile`` saved tensors could alias them): in training sigma uses the iteration's
        own fresh vectors (the values just copied into the buffers; no clones needed), in evaluation clones of
        the buffers (as ``torch.nn.utils.spectral_norm``). In fp32 whatever the autocast state (in bf16 the
        iteration's vectors would lose precision, and ``dot`` refuses mixed dtypes)."""
        if not self.spectral:
            return self.weight
        with torch.autocast(self.weight.device.type, enabled=False):
            matrix = self.weight.reshape(self.weight.shape[0], -1)
            if self.training:
                with torch.no_grad():
                    v = _unit(torch.mv(matrix.t(), self.sn_u))
                    u = _unit(torch.mv(matrix, v))
                    self.sn_v.copy_(v)
                    self.sn_u.copy_(u)
            else:
                u, v = self.sn_u.clone(), self.sn_v.clone()
            sigma = torch.dot(u, torch.mv(matrix, v))
        return self.weight / sigma


def _unit(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=0, eps=1e-12)`` of a vector, bit for bit, in three ops instead of four."""
    return x / torch.linalg.vector_norm(x).clamp_min(1e-12)


def _units(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``_unit`` of every vector of ``xs`` in three foreach ops (on the CPU the per-tensor kernels: bit for bit)."""
    return torch._foreach_div(xs, torch._foreach_clamp_min(torch._foreach_norm(xs), 1e-12))


def spectral_weights(layers: Sequence[_SpectralNorm]) -> list[torch.Tensor]:
    """Every layer's ``normalized_weight()``, with the power iterations of all the layers batched (training).

    The iterations do not depend on the activations, so a network can make them for all its layers at the start
    of its forward pass: the vector normalisations and the buffer updates become foreach ops over the layers (8
    per call instead of 8 per layer), and sigma reuses the iteration's ``W v`` (computed once, with its graph).
    The same values as the layers' own ``normalized_weight()``, bit for bit on the CPU (checked by
    ``tests/models/test_baselines.py``). Layers without spectral normalisation, and evaluation, use the per-layer path.
    """
    active = [layer for layer in layers if layer.spectral and layer.training]
    if not active:
        return [layer.normalized_weight() for layer in layers]
    with torch.autocast(active[0].weight.device.type, enabled=False):
        matrices = [layer.weight.reshape(layer.weight.shape[0], -1) for layer in active]
        with torch.no_grad():
            vs = _units([torch.mv(m.t(), layer.sn_u) for m, layer in zip(matrices, active)])
        wvs = [torch.mv(m, v) for m, v in zip(matrices, vs)]  # with the graph: sigma's
        with torch.no_grad():
            us = _units(wvs)
            torch._foreach_copy_([layer.sn_v for layer in active], vs)
            torch._foreach_copy_([layer.sn_u for layer in active], us)
        sigmas = iter([torch.dot(u, wv) for u, wv in zip(us, wvs)])
    return [
        layer.weight / next(sigmas) if layer.spectral and layer.training else layer.normalized_weight()
        for layer in layers
    ]


class SNConv2d(_SpectralNorm, nn.Conv2d):
    """``nn.Conv2d`` with optional spectral normalisation of its weight."""

    def __init__(self, *args: Any, spectral: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup_spectral(spectral)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``: this layer's ``normalized_weight()`` when the caller made it (``spectral_weights``)."""
        return self._conv_forward(x, self.normalized_weight() if weight is None else weight, self.bias)


class SNLinear(_SpectralNorm, nn.Linear):
    """``nn.Linear`` with optional spectral normalisation of its weight."""

    def __init__(self, *args: Any, spectral: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._setup_spectral(spectral)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``: this layer's ``normalized_weight()`` when the caller made it (``spectral_weights``)."""
        return F.linear(x, self.normalized_weight() if weight is None else weight, self.bias)


# --- generator -------------------------------------------------------------------------------------
class ConditionalBatchNorm2d(nn.Module):
    """x (O, C, H, W), categories (O,) -> BatchNorm without affine, then per-category scale and shift."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.channels = channels
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.embed = nn.Embedding(num_classes, channels * 2)

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        self.norm.reset_running_stats()
        self.embed.weight[:, : self.channels].normal_(1.0, 0.02, generator=generator)  # layout2im
        self.embed.weight[:, self.channels :].zero_()

    def forward(self, x: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.embed(categories).chunk(2, dim=1)
        return self.norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]


class CropEncoder(nn.Module):
    """crops (O, 3, c, c) ImageNet-normalised, categories (O,) -> mu (O, Z), logvar (O, Z)."""

    def __init__(self, dims: Sequence[int], z_dim: int, num_classes: int):
        super().__init__()
        convs = [nn.Conv2d(3, dims[0], 7, padding=3, bias=False)]
        convs += [nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False) for a, b in zip(dims[:-1], dims[1:])]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(d, num_classes) for d in dims])
        self.fc_mu = nn.Linear(dims[-1], z_dim)
        self.fc_logvar = nn.Linear(dims[-1], z_dim)

    def forward(self, crops: torch.Tensor, categories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = crops
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x), categories))
        x = x.mean(dim=(2, 3))
        return self.fc_mu(x), self.fc_logvar(x)


class ConvLSTMCell(nn.Module):
    """x (N, I, H, W), state (h, c) each (N, Hd, H, W) -> new (h, c)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        ifo, g = self.conv(torch.cat([x, h], dim=1)).split([3 * self.hidden, self.hidden], dim=1)
        i, f, o = torch.sigmoid(ifo).split(self.hidden, dim=1)  # the three sigmoid gates in one op
        c = f * c + i * torch.tanh(g)
        return o * torch.tanh(c), c


class ResidualBlock(nn.Module):
    """x (N, C, H, W) -> x + [3x3 conv, BN, ReLU, 3x3 conv, BN](x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """boxes (O, 4) normalised (x0, y0, x1, y1) -> (O, 1, S, S) binary masks, layout2im's rasterisation:
    rows ``[round(y0 S), max(round(y0 S) + 1, round(y1 S)))``, columns likewise (at least one pixel)."""
    scaled = torch.round(boxes.float() * size)
    x0, y0, x1, y1 = scaled.unbind(1)
    x1, y1 = torch.maximum(x1, x0 + 1), torch.maximum(y1, y0 + 1)
    grid = torch.arange(size, device=boxes.device, dtype=torch.float32)
    rows = (grid.view(1, -1) >= y0.view(-1, 1)) & (grid.view(1, -1) < y1.view(-1, 1))  # (O, S)
    cols = (grid.view(1, -1) >= x0.view(-1, 1)) & (grid.view(1, -1) < x1.view(-1, 1))
    return (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1).to(boxes.dtype)


class LayoutEncoder(nn.Module):
    """Objects of N images -> fused layout features (N, C, S / 2^k, S / 2^k).

    forward(categories (O,), boxes (O, 4), z (O, Z), obj_to_img (O,), positions (O,) = order of each object
    in its image's conv-LSTM sequence, num_images N, steps = the most objects of an image (host int; None:
    computed, a host synchronisation on a GPU)).
    """

    def __init__(self, cfg: Layout2ImConfig, num_classes: int, image_size: int):
        super().__init__()
        self.image_size = image_size
        dims = cfg.layout_encoder_dims
        self.embedding = nn.Embedding(num_classes, cfg.embedding_dim)
        convs = [nn.Conv2d(cfg.embedding_dim + cfg.z_dim, dims[0], 1, bias=False)]
        convs += [nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False) for a, b in zip(dims[:-1], dims[1:])]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList([ConditionalBatchNorm2d(d, num_classes) for d in dims])
        inputs = (dims[-1], *cfg.clstm_dims[:-1])
        self.cells = nn.ModuleList([ConvLSTMCell(i, h, cfg.clstm_kernel) for i, h in zip(inputs, cfg.clstm_dims)])
        self.residual = nn.Sequential(*[ResidualBlock(cfg.clstm_dims[-1]) for _ in range(cfg.res_blocks)])

    def forward(
        self,
        categories: torch.Tensor,
        boxes: torch.Tensor,
        z: torch.Tensor,
        obj_to_img: torch.Tensor,
        positions: torch.Tensor,
        num_images: int,
        steps: int | None = None,
    ) -> torch.Tensor:
        vec = torch.cat([self.embedding(categories), z], dim=1)
        # the first 1x1 conv (no bias) of the vector spread over its box mask, computed as
        # (W vec) * mask: the same numbers without convolving the (O, E + Z, S, S) map
        first = self.convs[0]
        x = F.linear(vec, first.weight.flatten(1))[:, :, None, None] * box_masks(boxes, self.image_size)
        last = len(self.convs) - 1
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(x if k == 0 else conv(x), categories)
            if k < last:  # layout2im: no activation after the last conv before the conv-LSTM
                x = F.relu(x)
        counts = torch.zeros(num_images, dtype=torch.int64, device=obj_to_img.device).index_add(
            0, obj_to_img, torch.ones_like(obj_to_img)
        )
        if steps is None:
            steps = int(counts.max()) if counts.numel() and len(categories) else 0
        _, channels, height, width = x.shape
        sequence = x.new_zeros(num_images, max(steps, 1), channels, height, width)
        sequence[obj_to_img, positions] = x
        states = [
            (x.new_zeros(num_images, cell.hidden, height, width), x.new_zeros(num_images, cell.hidden, height, width))
            for cell in self.cells
        ]
        outputs = [states[-1][0]]  # the last layer's h after 0, 1, ..., steps objects
        for t in range(steps):
            inp = sequence[:, t]
            for layer, cell in enumerate(self.cells):
                states[layer] = cell(inp, states[layer])
                inp = states[layer][0]
            outputs.append(inp)
        # an image with k objects ends with its state after its own k steps. The steps past its last object run
        # on its zero padding and are never read: the same numbers as holding its state (no per-step masks)
        final = torch.stack(outputs, dim=1)[torch.arange(num_images, device=counts.device), counts]
        return self.residual(final)


class Decoder(nn.Module):
    """features (N, C, h, w) -> images (N, 3, h 2^k, w 2^k) (ImageNet-normalised space, no output activation)."""

    def __init__(self, in_channels: int, dims: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, dims[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(dims[0]),
            nn.ReLU(),
        ]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        layers.append(nn.Conv2d(dims[-1], 3, 7, padding=3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Layout2ImOutput(NamedTuple):
    image_rand: torch.Tensor  # (N, 3, S, S) from z ~ N(0, I)
    image_rec: torch.Tensor | None  # (N, 3, S, S) from the encoded real crops (training only)
    crops_real: torch.Tensor | None  # (O, 3, c, c)
    crops_rec: torch.Tensor | None  # (O, 3, c, c) crops of image_rec
    crops_rand: torch.Tensor | None  # (O, 3, c, c) crops of image_rand
    mu: torch.Tensor | None  # (O, Z)
    logvar: torch.Tensor | None  # (O, Z)
    z_rand_rec: torch.Tensor | None  # (O, Z) crop-encoder mean of the crops of image_rand


class Layout2ImGenerator(nn.Module):
    """Real objects of N images -> images.

    forward(categories (O,), boxes (O, 4), obj_to_img (O,), positions (O,), num_images N, z_rand (O, Z),
    images (N, 3, S, S) | None, eps (O, Z) | None, steps: the most objects of an image (host int) | None):
    with ``images`` (training), also the variational reconstruction path; without, only ``image_rand``
    (sampling).
    """

    def __init__(self, cfg: Layout2ImConfig, spec: DataSpec):
        super().__init__()
        self.crop_size = cfg.crop_size
        self.crop_encoder = CropEncoder(cfg.crop_encoder_dims, cfg.z_dim, spec.num_objects)
        self.layout_encoder = LayoutEncoder(cfg, spec.num_objects, spec.image_size)
        self.decoder = Decoder(cfg.clstm_dims[-1], cfg.decoder_dims)

    def render(
        self,
        categories: torch.Tensor,
        boxes: torch.Tensor,
        obj_to_img: torch.Tensor,
        positions: torch.Tensor,
        num_images: int,
        z: torch.Tensor,
        steps: int | None = None,
    ) -> torch.Tensor:
        return self.decoder(self.layout_encoder(categories, boxes, z, obj_to_img, positions, num_images, steps))

    def forward(
        self,
        categories: torch.Tensor,
        boxes: torch.Tensor,
        obj_to_img: torch.Tensor,
        positions: torch.Tensor,
        num_images: int,
        z_rand: torch.Tensor,
        images: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> Layout2ImOutput:
        image_rand = self.render(categories, boxes, obj_to_img, positions, num_images, z_rand, steps)
        if images is None:
            return Layout2ImOutput(image_rand, None, None, None, None, None, None, None)
        if eps is None:
            raise ValueError("training needs eps (O, Z) for the reparameterisation")
        crops_real = crop_boxes(images, boxes, obj_to_img, self.crop_size)
        mu, logvar = self.crop_encoder(crops_real, categories)
        z_rec = mu + torch.exp(0.5 * logvar) * eps
        image_rec = self.render(categories, boxes, obj_to_img, positions, num_images, z_rec, steps)
        crops_rand = crop_boxes(image_rand, boxes, obj_to_img, self.crop_size)
        z_rand_rec, _ = self.crop_encoder(crops_rand, categories)
        crops_rec = crop_boxes(image_rec, boxes, obj_to_img, self.crop_size)
        return Layout2ImOutput(image_rand, image_rec, crops_real, crops_rec, crops_rand, mu, logvar, z_rand_rec)


# --- discriminators (layout2im's spectral-norm residual CNNs) ----------------------------------------
class DBlock(nn.Module):
    """Residual discriminator block: x (N, A, H, W) -> (N, B, H / 2, W / 2) (or same size).

    ``first``: conv, ReLU, conv (layout2im's OptimizedBlock); else ReLU, conv, ReLU, conv. Shortcut: 1x1 conv
    when the channels change or it downsamples (2x2 average pooling after the convs)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool, spectral: bool):
        super().__init__()
        self.first, self.downsample = first, downsample
        hidden = out_channels if first else in_channels
        self.conv1 = SNConv2d(in_channels, hidden, 3, padding=1, spectral=spectral)
        self.conv2 = SNConv2d(hidden, out_channels, 3, padding=1, spectral=spectral)
        self.shortcut = (
            SNConv2d(in_channels, out_channels, 1, spectral=spectral)
            if first or downsample or in_channels != out_channels
            else None
        )

    def spectral_layers(self) -> list[_SpectralNorm]:
        """The block's weight layers in the order ``forward`` takes their weights."""
        return [self.conv1, self.conv2] + ([self.shortcut] if self.shortcut is not None else [])

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``weights``: the ``spectral_layers``' normalised weights (else each layer makes its own)."""
        w1, w2, ws = (None, None, None) if weights is None else (*weights, None)[:3]
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h, w1)), w2)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # OptimizedBlock: pool, then 1x1 conv
            s = self.shortcut(F.avg_pool2d(x, 2) if self.downsample else x, ws)
        elif self.shortcut is not None:  # ResidualBlock: 1x1 conv, then pool
            s = self.shortcut(x, ws)
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


def _trunk(dims: Sequence[int], spectral: bool, downsample_first: bool) -> nn.Sequential:
    blocks = [DBlock(3, dims[0], downsample_first, True, spectral)]
    blocks += [DBlock(a, b, True, False, spectral) for a, b in zip(dims[:-1], dims[1:])]
    return nn.Sequential(*blocks)


def _trunk_layers(trunk: nn.Sequential) -> list[_SpectralNorm]:
    return [layer for block in trunk for layer in block.spectral_layers()]


def _run_trunk(trunk: nn.Sequential, x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The trunk's blocks on ``x`` (N, 3, S, S), each taking its share of ``weights`` (``_trunk_layers`` order)."""
    start = 0
    for block in trunk:
        count = len(block.spectral_layers())
        x = block(x, weights[start : start + count])
        start += count
    return x


class ImageDiscriminator(nn.Module):
    """images (N, 3, S, S) -> real/fake logits (N,): residual trunk (every block halves), ReLU, sum pool, linear."""

    def __init__(self, dims: Sequence[int], spectral: bool):
        super().__init__()
        self.trunk = _trunk(dims, spectral, downsample_first=True)
        self.classifier = SNLinear(dims[-1], 1, bias=False, spectral=spectral)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        weights = spectral_weights(_trunk_layers(self.trunk) + [self.classifier])
        h = F.relu(_run_trunk(self.trunk, images, weights[:-1])).sum(dim=(2, 3))
        return self.classifier(h, weights[-1]).view(-1)


class ObjectDiscriminator(nn.Module):
    """crops (O, 3, c, c) -> real/fake logits (O,), category logits (O, C) (first block keeps the size)."""

    def __init__(self, dims: Sequence[int], num_classes: int, spectral: bool):
        super().__init__()
        self.trunk = _trunk(dims, spectral, downsample_first=False)
        self.real_head = SNLinear(dims[-1], 1, spectral=spectral)
        self.class_head = SNLinear(dims[-1], num_classes, spectral=spectral)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = spectral_weights(_trunk_layers(self.trunk) + [self.real_head, self.class_head])
        h = F.relu(_run_trunk(self.trunk, crops, weights[:-2])).sum(dim=(2, 3))
        return self.real_head(h, weights[-2]).view(-1), self.class_head(h, weights[-1])


class Layout2ImMethod(Method):
    name = "layout2im"
    config_class = Layout2ImConfig
    settings = ("gt_bbox",)  # takes ground-truth boxes; the paper evaluates it with GT boxes only

    def __init__(self, config: Layout2ImConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        scale = 2 ** (len(config.layout_encoder_dims) - 1)
        if spec.image_size % scale:
            raise ConfigError(
                f"layout2im: image size {spec.image_size} is not divisible by 2^"
                f"{len(config.layout_encoder_dims) - 1} (layout encoder downsamplings)"
            )
        if config.crop_size < 2 ** (max(len(config.d_obj_dims), len(config.crop_encoder_dims)) - 1):
            raise ConfigError(
                f"layout2im: crop_size {config.crop_size} is too small for the crop encoder / "
                "object discriminator downsamplings"
            )

    def notes(self) -> Mapping[str, str]:
        return {
            "update_order": "generator, then discriminators (the shared loop; layout2im updates D first)",
            "kl": f"weight {self.config.kl_weight} x KL summed over an image's objects and latent dims, averaged "
            "over images (layout2im: 0.01 x the sum over its batch of 8)",
        }

    # --- networks ---
    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        cfg, spec = self.config, self.spec
        return {
            "generator": build(lambda: Layout2ImGenerator(cfg, spec), generator),
            "d_img": build(lambda: ImageDiscriminator(cfg.d_img_dims, cfg.spectral_norm), generator),
            "d_obj": build(lambda: ObjectDiscriminator(cfg.d_obj_dims, spec.num_objects, cfg.spectral_norm), generator),
        }

    def roles(self) -> Mapping[str, Role]:
        return {"generator": "generator", "d_img": "discriminator", "d_obj": "discriminator"}

    def optimizer(self, network: str) -> AdamConfig:
        return {
            "generator": self.config.optim_generator,
            "d_img": self.config.optim_d_img,
            "d_obj": self.config.optim_d_obj,
        }[network]

    # --- helpers ---
    def objects(self, batch: SceneGraphBatch, generators: Sequence[torch.Generator], with_eps: bool) -> dict[str, Any]:
        """The real objects of the batch, their conv-LSTM positions and per-object noise.

        Per image n, from ``generators[n]``: the object order (a random permutation when
        ``shuffle_objects``), then ``z_rand`` (O_n, Z), then (training) ``eps`` (O_n, Z).
        Returns categories (O,), boxes (O, 4), obj_to_img (O,), positions (O,), z_rand (O, Z), eps (O, Z) | None.
        Uses the batch's host counts and index tensors (the collate function's layout), so nothing is read back
        from the device.
        """
        if len(generators) != batch.num_images:
            raise ValueError(f"{len(generators)} generators for {batch.num_images} images")
        real_rows = batch.real_index()
        obj_to_img = batch.obj_to_img.index_select(0, real_rows)
        local = batch.object_index.index_select(0, real_rows)  # rank in its image (real objects come first)
        device, z_dim = batch.images.device, self.config.z_dim
        counts = self.object_counts(batch)
        z_rand, eps, order = [], [], []
        for count, gen in zip(counts, generators):  # random draws only: each image's own stream
            if self.config.shuffle_objects:
                order.append(torch.randperm(count, generator=gen, device=device))
            z_rand.append(torch.randn(count, z_dim, generator=gen, device=device))
            if with_eps:
                eps.append(torch.randn(count, z_dim, generator=gen, device=device))
        positions = local
        if order:  # object j of image n takes sequence slot inverse(order_n)[j]: one scatter for the batch
            start = torch.arange(local.shape[0], device=device) - local  # first real row of each object's image
            positions = torch.empty_like(local).index_put_((start + torch.cat(order),), local)
        return {
            "categories": batch.objs.index_select(0, real_rows),
            "boxes": batch.boxes.index_select(0, real_rows),
            "obj_to_img": obj_to_img,
            "positions": positions,
            "z_rand": torch.cat(z_rand) if z_rand else None,
            "eps": torch.cat(eps) if with_eps else None,
        }

    @staticmethod
    def object_counts(batch: SceneGraphBatch) -> list[int]:
        """Real objects of each image (host values; from the data for a batch not made by the collate function)."""
        if batch.objects_per_image:
            return [c - 1 for c in batch.objects_per_image]
        return torch.bincount(batch.obj_to_img[batch.real_objects], minlength=batch.num_images).tolist()

    def scores(self, net: nn.Module, inputs: Sequence[torch.Tensor]) -> list[Any]:
        """``net`` on each of ``inputs`` (layout2im: one call each); with ``batch_discriminator_calls`` one call on
        their concatenation, split back (the discriminators have no batch statistics, so every logit is the
        same function of its own input; only the spectral-norm power iteration runs once instead of per call)."""
        if not self.config.batch_discriminator_calls:
            return [net(x) for x in inputs]
        sizes = [int(x.shape[0]) for x in inputs]
        out = net(torch.cat(list(inputs)))
        if isinstance(out, tuple):
            return list(zip(*(part.split(sizes) for part in out)))
        return list(out.split(sizes))

    # --- losses ---
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        cfg = self.config
        o = self.objects(batch, ctx.generators, with_eps=True)
        out = nets["generator"](
            o["categories"],
            o["boxes"],
            o["obj_to_img"],
            o["positions"],
            batch.num_images,
            o["z_rand"],
            batch.images,
            o["eps"],
            steps=max(self.object_counts(batch)),
        )
        terms = losses.LossSum()
        terms.add("img_rec", losses.pixel_l1(out.image_rec, batch.images), cfg.lambda_img_rec)
        terms.add("z_rec", F.l1_loss(out.z_rand_rec.float(), o["z_rand"].float()), cfg.lambda_z_rec)
        kl = -0.5 * (1 + out.logvar - out.mu.pow(2) - out.logvar.exp()).float().sum() / batch.num_images
        terms.add("kl", kl, cfg.kl_weight)
        img_rec, img_rand = self.scores(nets["d_img"], [out.image_rec, out.image_rand])
        img_adv = 0.5 * (losses.bce_to(img_rec, 1.0) + losses.bce_to(img_rand, 1.0))
        terms.add("img_adv", img_adv, cfg.lambda_img_adv)
        (real_rec, cls_rec), (real_rand, cls_rand) = self.scores(nets["d_obj"], [out.crops_rec, out.crops_rand])
        terms.add("obj_adv", 0.5 * (losses.bce_to(real_rec, 1.0) + losses.bce_to(real_rand, 1.0)), cfg.lambda_obj_adv)
        terms.add(
            "obj_cls",
            0.5
            * (
                losses.auxiliary_classification(cls_rec, o["categories"])
                + losses.auxiliary_classification(cls_rand, o["categories"])
            ),
            cfg.lambda_obj_cls,
        )
        cache = {
            "image_rec": out.image_rec.detach(),
            "image_rand": out.image_rand.detach(),
            "crops_rec": out.crops_rec.detach(),
            "crops_rand": out.crops_rand.detach(),
            "crops_real": out.crops_real.detach(),
            "categories": o["categories"],
        }
        return StepOutput(terms.result(), terms.logs, cache=cache)

    def discriminator_step(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any, ctx: StepContext
    ) -> StepOutput | None:
        cfg = self.config
        terms = losses.LossSum()
        img_rec, img_rand, img_real = self.scores(
            nets["d_img"], [cache["image_rec"], cache["image_rand"], batch.images]
        )
        img_fake = 0.5 * (losses.bce_to(img_rec, 0.0) + losses.bce_to(img_rand, 0.0))
        terms.add("img_adv_real", losses.bce_to(img_real, 1.0), cfg.lambda_img_adv)
        terms.add("img_adv_fake", img_fake, cfg.lambda_img_adv)
        (fake_rec, _), (fake_rand, _), (real, real_cls) = self.scores(
            nets["d_obj"], [cache["crops_rec"], cache["crops_rand"], cache["crops_real"]]
        )
        terms.add("obj_adv_real", losses.bce_to(real, 1.0), cfg.lambda_obj_adv)
        terms.add(
            "obj_adv_fake", 0.5 * (losses.bce_to(fake_rec, 0.0) + losses.bce_to(fake_rand, 0.0)), cfg.lambda_obj_adv
        )
        terms.add("obj_cls_real", losses.auxiliary_classification(real_cls, cache["categories"]), cfg.lambda_obj_cls)
        if not terms.logs:  # every discriminator weight is zero
            return None
        return StepOutput(terms.result(), terms.logs)

    # --- inference ---
    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        if setting not in self.settings:
            raise ValueError(f"layout2im has no setting {setting!r} (it needs ground-truth boxes)")
        o = self.objects(batch, generators, with_eps=False)
        out = nets["generator"](
            o["categories"],
            o["boxes"],
            o["obj_to_img"],
            o["positions"],
            batch.num_images,
            o["z_rand"],
            steps=max(self.object_counts(batch)),
        )
        return SampleOutput(images=out.image_rand)
