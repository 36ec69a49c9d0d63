"""AttnGAN (Xu et al., CVPR 2018) on scene graphs turned into sentences (the RetrieveGAN paper's baseline).

The paper converts "each relationship in the graph into a sentence" and links them with "and"
(``retrievegan.text``), then trains AttnGAN on those sentences. AttnGAN has no boxes: it is evaluated in
the predicted-box setting only (``settings = ("pred_bbox",)``; the paper has no "AttnGAN (GT)" row).

Architecture and losses (facts of AttnGAN's public code, ``code/model.py``, ``code/miscc/losses.py``,
``code/trainer.py``, ``code/cfg/coco_attn2.yml``; re-implemented):

* text: the frozen, pre-trained DAMSM text encoder (``retrievegan pretrain-damsm``; required input
  ``damsm``) gives word features ``(N, D, L)`` and a sentence feature ``(N, D)``;
* generator: conditioning augmentation (FC + GLU -> mu, logvar; ``c = mu + sigma * eps``), an initial stage
  (FC + BN + GLU to ``4 x 4``, then upsampling blocks: nearest x2, 3x3 conv, BN, GLU) and ``stages - 1``
  attention stages (word attention over the previous stage's features -- 1x1 conv of the word features,
  softmax over the words per pixel, padding masked -- concatenated with the features, ``r_num`` GLU
  residual blocks, one upsampling block); every stage has an image head (3x3 conv + tanh);
* one discriminator per stage: strided 4x4 convs down to ``4 x 4 x 8 df``, an unconditional logit and a
  sentence-conditional logit (features concatenated with the sentence feature, 3x3 conv, 4x4 conv);
* D loss per stage: ``(real_uncond + real_cond) / 2 + (fake_uncond + fake_cond + wrong_cond) / 3``, "wrong"
  = real images with the next image's sentence; G loss: per stage uncond + cond (non-saturating BCE), plus
  ``lambda_damsm`` x the DAMSM word and sentence losses of the last stage's images against their sentences
  (frozen DAMSM image encoder), plus the conditioning-augmentation KL (mean, weight 1);
* Adam lr 2e-4, betas (0.5, 0.999) for G and every D; z ~ N(0, I) of ``z_dim`` per image.

Stages (ours: the paper does not say how it ran AttnGAN at 128 x 128): the first stage renders
``image_size / 2^(stages - 1)``; each further stage doubles it. Paper configs: 3 stages 32 -> 64 -> 128 (AttnGAN's
COCO model has 3 stages, two with attention, at 64 -> 128 -> 256); embedded default: 2 stages 32 -> 64. The
initial stage starts from ``gf_dim * 2^u`` channels (u = its upsampling blocks) so that every stage
works at ``gf_dim`` channels, as AttnGAN's ``ngf * 16`` for u = 4. A discriminator for an ``s`` px stage has
``log2(s / 4)`` strided convs, then one 3x3 block back to ``8 df`` channels when needed (AttnGAN's D_NET128;
its D_NET256 uses two). Deviations (ours): logits go through BCE-with-logits instead of sigmoid + BCE (same
loss, stable); default PyTorch initialisation from an explicit generator (AttnGAN: orthogonal weights);
no moving average of the generator weights (AttnGAN keeps one, decay 0.999, for its samples); the real
images of each stage are the dataset's images resized (bilinear, antialiased) to the stage's size.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.errors import ConfigError
from retrievegan.models.damsm import (
    ImagenetStats,
    damsm_losses,
    identical_texts,
    imagenet_stats,
    sort_by_length,
    to_imagenet_normalized,
    to_tanh_range,
)
from retrievegan.models.init import build, meta_device
from retrievegan.train import losses
from retrievegan.train.config import AdamConfig
from retrievegan.train.method import Method, Role, SampleOutput, StepContext, StepOutput

ATTNGAN_ADAM = AdamConfig(lr=2e-4, betas=(0.5, 0.999))  # AttnGAN GENERATOR_LR / DISCRIMINATOR_LR, trainer.py betas


@dataclasses.dataclass(frozen=True)
class AttnGanConfig:
    """The ``attngan`` config section. Defaults: AttnGAN's COCO configuration (code/cfg/coco_attn2.yml)."""

    stages: int = 3  # AttnGAN COCO TREE.BRANCH_NUM 3 (ours at 128 px: 32 -> 64 -> 128)
    gf_dim: int = 48  # AttnGAN COCO GAN.GF_DIM
    df_dim: int = 96  # AttnGAN COCO GAN.DF_DIM
    z_dim: int = 100  # AttnGAN GAN.Z_DIM
    condition_dim: int = 100  # AttnGAN GAN.CONDITION_DIM
    r_num: int = 3  # AttnGAN COCO GAN.R_NUM (residual blocks per attention stage)
    lambda_damsm: float = 50.0  # AttnGAN COCO TRAIN.SMOOTH.LAMBDA (DAMSM loss weight in G)
    kl_weight: float = 1.0  # AttnGAN adds KL_loss(mu, logvar) unweighted
    unconditional_loss: bool = True  # AttnGAN D_NET b_jcu: unconditional + conditional logits
    optim_generator: AdamConfig = ATTNGAN_ADAM
    optim_discriminator: AdamConfig = ATTNGAN_ADAM  # every stage discriminator

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError("stages must be >= 1")
        if min(self.gf_dim, self.df_dim, self.z_dim, self.condition_dim) < 1 or self.r_num < 0:
            raise ValueError("gf_dim, df_dim, z_dim, condition_dim must be >= 1 and r_num >= 0")
        if self.lambda_damsm < 0 or self.kl_weight < 0:
            raise ValueError("loss weights must be >= 0")


# --- generator -------------------------------------------------------------------------------------
class GLU(nn.Module):
    """Gated linear unit over channels: x (N, 2C, ...) -> x[:, :C] * sigmoid(x[:, C:])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"GLU needs an even channel count, got {x.shape[1]}")
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """(N, in, H, W) -> (N, out, 2H, 2W): nearest upsampling, 3x3 conv, BN, GLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_channels, out_channels * 2),
        nn.BatchNorm2d(out_channels * 2),
        GLU(),
    )


class ResBlock(nn.Module):
    """x (N, C, H, W) -> x + [3x3 conv, BN, GLU, 3x3 conv, BN](x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channels, channels * 2),
            nn.BatchNorm2d(channels * 2),
            GLU(),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ConditioningAugmentation(nn.Module):
    """sentence (N, T), eps (N, C) -> c (N, C) = mu + exp(logvar / 2) * eps, mu (N, C), logvar (N, C)."""

    def __init__(self, text_dim: int, condition_dim: int):
        super().__init__()
        self.condition_dim = condition_dim
        self.fc = nn.Linear(text_dim, condition_dim * 4)
        self.glu = GLU()

    def forward(self, sentence: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.glu(self.fc(sentence))
        mu, logvar = x[:, : self.condition_dim], x[:, self.condition_dim :]
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class InitialStage(nn.Module):
    """z (N, Z), c (N, C) -> features (N, gf, 4 * 2^u, 4 * 2^u): FC + BN + GLU to 4x4, then u upsampling blocks."""

    def __init__(self, in_dim: int, gf_dim: int, upsamplings: int):
        super().__init__()
        self.channels = gf_dim * 2**upsamplings
        self.fc = nn.Sequential(
            nn.Linear(in_dim, self.channels * 16 * 2, bias=False), nn.BatchNorm1d(self.channels * 16 * 2), GLU()
        )
        self.up = nn.Sequential(
            *[up_block(self.channels // 2**k, self.channels // 2 ** (k + 1)) for k in range(upsamplings)]
        )

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.fc(torch.cat([c, z], dim=1)).view(z.shape[0], self.channels, 4, 4)
        return self.up(x)


class WordAttention(nn.Module):
    """AttnGAN's GlobalAttentionGeneral: features (N, C, H, W), words (N, D, L), padding (N, L) bool
    -> word context (N, C, H, W) (per pixel, a softmax over the non-padding words), attention (N, L, H, W)."""

    def __init__(self, channels: int, word_dim: int):
        super().__init__()
        self.project = nn.Conv1d(word_dim, channels, 1, bias=False)

    def forward(
        self, features: torch.Tensor, words: torch.Tensor, padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = features.shape
        source = self.project(words)  # (N, C, L)
        logits = torch.bmm(features.view(n, c, h * w).transpose(1, 2), source)  # (N, HW, L)
        logits = logits.masked_fill(padding.unsqueeze(1), float("-inf"))
        attn = logits.softmax(dim=2)
        context = torch.bmm(source, attn.transpose(1, 2)).view(n, c, h, w)
        return context, attn.transpose(1, 2).reshape(n, -1, h, w)


class AttentionStage(nn.Module):
    """features (N, gf, H, W) + words -> (N, gf, 2H, 2W): attention, concat, residual blocks, upsampling."""

    def __init__(self, gf_dim: int, word_dim: int, r_num: int):
        super().__init__()
        self.attention = WordAttention(gf_dim, word_dim)
        self.residual = nn.Sequential(*[ResBlock(gf_dim * 2) for _ in range(r_num)])
        self.up = up_block(gf_dim * 2, gf_dim)

    def forward(self, features: torch.Tensor, words: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        context, _ = self.attention(features, words, padding)
        return self.up(self.residual(torch.cat([features, context], dim=1)))


class AttnGanOutput(NamedTuple):
    images: list[torch.Tensor]  # one (N, 3, s_k, s_k) tanh image per stage, smallest first
    mu: torch.Tensor  # (N, C) conditioning augmentation
    logvar: torch.Tensor  # (N, C)


class AttnGanGenerator(nn.Module):
    """z (N, Z), sentence (N, D), words (N, D, L), padding (N, L) bool, eps (N, C) -> AttnGanOutput."""

    def __init__(self, cfg: AttnGanConfig, text_dim: int, image_size: int):
        super().__init__()
        base = image_size // 2 ** (cfg.stages - 1)
        upsamplings = int(math.log2(base // 4)) if base >= 4 else -1
        if base * 2 ** (cfg.stages - 1) != image_size or upsamplings < 0 or 4 * 2**upsamplings != base:
            raise ConfigError(
                f"attngan: image size {image_size} with {cfg.stages} stages needs a first stage of "
                f"4 * 2^u px (got {image_size} / 2^{cfg.stages - 1})"
            )
        self.ca = ConditioningAugmentation(text_dim, cfg.condition_dim)
        self.initial = InitialStage(cfg.z_dim + cfg.condition_dim, cfg.gf_dim, upsamplings)
        self.next_stages = nn.ModuleList(
            [AttentionStage(cfg.gf_dim, text_dim, cfg.r_num) for _ in range(cfg.stages - 1)]
        )
        self.heads = nn.ModuleList([nn.Sequential(conv3x3(cfg.gf_dim, 3), nn.Tanh()) for _ in range(cfg.stages)])

    def forward(
        self, z: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor, padding: torch.Tensor, eps: torch.Tensor
    ) -> AttnGanOutput:
        c, mu, logvar = self.ca(sentence, eps)
        h = self.initial(z, c)
        images = [self.heads[0](h)]
        for stage, head in zip(self.next_stages, self.heads[1:]):
            h = stage(h, words, padding)
            images.append(head(h))
        return AttnGanOutput(images, mu, logvar)


# --- discriminators --------------------------------------------------------------------------------
def _leaky_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2))


class StageDiscriminator(nn.Module):
    """images (N, 3, s, s) in [-1, 1], sentence (N, D) -> (uncond (N,) | None, cond (N,), wrong (N - 1,) | None).

    ``wrong``: the conditional logits of image i with sentence i + 1 (mismatched pairs), when asked.
    """

    def __init__(self, image_size: int, df_dim: int, text_dim: int, unconditional: bool):
        super().__init__()
        downs = int(math.log2(image_size // 4))
        if image_size < 8 or 4 * 2**downs != image_size:
            raise ConfigError(f"attngan: a stage of {image_size} px is not 4 * 2^k with k >= 1")
        layers: list[nn.Module] = [nn.Conv2d(3, df_dim, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        channels = df_dim
        for _ in range(downs - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2),
            ]
            channels *= 2
        if channels != df_dim * 8:
            layers.append(_leaky_block(channels, df_dim * 8))
        self.encode = nn.Sequential(*layers)
        self.text_dim = text_dim
        self.joint = _leaky_block(df_dim * 8 + text_dim, df_dim * 8)
        self.cond_logit = nn.Conv2d(df_dim * 8, 1, 4, stride=4)
        self.uncond_logit = nn.Conv2d(df_dim * 8, 1, 4, stride=4) if unconditional else None

    def _cond(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        tiled = sentence.view(-1, self.text_dim, 1, 1).expand(-1, -1, 4, 4)
        return self.cond_logit(self.joint(torch.cat([features, tiled], dim=1))).view(-1)

    def forward(
        self, images: torch.Tensor, sentence: torch.Tensor, wrong: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        features = self.encode(images)
        uncond = self.uncond_logit(features).view(-1) if self.uncond_logit is not None else None
        mismatched = self._cond(features[:-1], sentence[1:]) if wrong and images.shape[0] > 1 else None
        return uncond, self._cond(features, sentence), mismatched


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) averaged over the elements of mu, logvar (N, C) (AttnGAN's KL_loss)."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def tanh_range_stages(images: torch.Tensor, stats: ImagenetStats, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """ImageNet-normalised images (N, 3, S, S) in [-1, 1] at every size of ``sizes`` (antialiased bilinear)."""
    real = to_tanh_range(images, stats)
    return [
        real
        if s == real.shape[-1]
        else F.interpolate(real, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        for s in sizes
    ]


class AttnGanMethod(Method):
    name = "attngan"
    config_class = AttnGanConfig
    settings = ("pred_bbox",)  # no boxes at all; the paper reports it in the predicted-box setting only
    required_inputs = ("damsm",)  # retrievegan pretrain-damsm checkpoint

    def __init__(self, config: AttnGanConfig, spec: DataSpec, inputs: Mapping[str, Any] | None = None):
        super().__init__(config, spec, inputs)
        from retrievegan.train.damsm import load_damsm

        self.damsm = load_damsm(self.inputs["damsm"], spec)
        self.stage_sizes = [spec.image_size // 2 ** (config.stages - 1 - k) for k in range(config.stages)]
        # fail early on an impossible size (the networks check it again when built)
        with meta_device():
            AttnGanGenerator(config, self.damsm.config.embed_dim, spec.image_size)
        self.matching_losses: Callable[..., dict[str, torch.Tensor]] = damsm_losses  # compile_functions: compiled
        self._imagenet: dict[tuple[torch.device, torch.dtype], ImagenetStats] = {}  # made once per device, dtype
        # the step's functions, compiled by compile_functions
        self.adversarial_sum: Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = losses.weighted_bce_sum
        self.kl_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = kl_divergence
        self.real_stages_of: Callable[..., list[torch.Tensor]] = tanh_range_stages

    def compile_functions(self, compile: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """The DAMSM matching losses of the generator step (word attention over the image regions), the sums of
        the adversarial terms of both phases, the KL term and the real images' stages compiled."""
        self.matching_losses = compile(damsm_losses)
        self.adversarial_sum = compile(losses.weighted_bce_sum)
        self.kl_loss = compile(kl_divergence)
        self.real_stages_of = compile(tanh_range_stages)

    def notes(self) -> Mapping[str, str]:
        from retrievegan.io import sha256_file

        encoder = self.damsm.config.image_encoder
        what = (
            "ImageNet Inception-v3 (frozen trunk), as AttnGAN"
            if encoder == "inception"
            else "a small CNN trained from scratch on this benchmark (substitutes AttnGAN's ImageNet Inception-v3)"
        )
        return {
            "damsm_checkpoint": str(self.inputs["damsm"]),
            "damsm_checkpoint_sha256": sha256_file(self.inputs["damsm"]),
            "damsm_image_encoder": f"{encoder}: {what}",
            "generator_average": "none (AttnGAN samples from a moving average of G, decay 0.999)",
        }

    @property
    def text_dim(self) -> int:
        return self.damsm.config.embed_dim

    def d_names(self) -> list[str]:
        return [f"d_stage{k + 1}" for k in range(self.config.stages)]

    # --- networks ---
    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        cfg, size = self.config, self.spec.image_size
        nets: dict[str, nn.Module] = {"generator": build(lambda: AttnGanGenerator(cfg, self.text_dim, size), generator)}
        for name, stage_size in zip(self.d_names(), self.stage_sizes):
            nets[name] = build(
                lambda s=stage_size: StageDiscriminator(s, cfg.df_dim, self.text_dim, cfg.unconditional_loss), generator
            )
        # copies of the pre-trained DAMSM encoders, frozen (AttnGAN never updates them while training the GAN)
        for name, net in (
            ("text_encoder", copy.deepcopy(self.damsm.text_encoder)),
            ("image_encoder", copy.deepcopy(self.damsm.image_encoder)),
        ):
            for param in net.parameters():
                param.requires_grad_(False)
            nets[name] = net.eval()
        return nets

    def roles(self) -> Mapping[str, Role]:
        roles: dict[str, Role] = {"generator": "generator", "text_encoder": "generator", "image_encoder": "generator"}
        roles.update({name: "discriminator" for name in self.d_names()})
        return roles

    def optimizer(self, network: str) -> AdamConfig:
        if network in ("generator", "text_encoder", "image_encoder"):  # the encoders have no trainable parameter
            return self.config.optim_generator
        return self.config.optim_discriminator

    def train_modes(self, nets: Mapping[str, nn.Module], step: int) -> None:
        super().train_modes(nets, step)
        nets["text_encoder"].eval()  # frozen: no dropout, BatchNorm statistics of the pre-training
        nets["image_encoder"].eval()

    # --- helpers ---
    def imagenet(self, images: torch.Tensor) -> ImagenetStats:
        """ImageNet mean and std on ``images``' device and dtype (made on first use, then reused)."""
        key = (images.device, images.dtype)
        if key not in self._imagenet:
            self._imagenet[key] = imagenet_stats(*key)
        return self._imagenet[key]

    def host_prepare(self, batch: SceneGraphBatch) -> SceneGraphBatch:
        """The batch's sentences as tokens, made on the host from the CPU batch (``extras``: ``tokens`` (N, L),
        ``token_lengths`` (N,) and the longest-first ``token_order`` / ``token_restore`` (N,) move to the device;
        ``sorted_lengths_host`` stays on the host for the LSTM's packing)."""
        tokens, lengths = self.damsm.tokens(batch)
        order, restore = sort_by_length(lengths)
        extras = {
            **batch.extras,
            "tokens": tokens,
            "token_lengths": lengths,
            "token_order": order,
            "token_restore": restore,
            "sorted_lengths_host": tuple(lengths[order].tolist()),
        }
        return dataclasses.replace(batch, extras=extras)

    def encode_text(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> tuple[torch.Tensor, ...]:
        """tokens (N, L), lengths (N,), words (N, D, L), sentence (N, D), padding (N, L) of the batch's sentences
        (from ``host_prepare``'s extras; a batch without them is tokenised here, reading it on the host)."""
        batch = self.with_host_inputs(batch, "tokens")
        tokens, lengths = batch.extras["tokens"], batch.extras["token_lengths"]
        with torch.no_grad():
            words, sentence = nets["text_encoder"](
                tokens,
                torch.tensor(batch.extras["sorted_lengths_host"]),
                order=batch.extras["token_order"],
                restore=batch.extras["token_restore"],
            )
        return tokens, lengths, words, sentence, tokens == 0

    def noise(self, batch: SceneGraphBatch, generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """z (N, Z) and conditioning-augmentation eps (N, C), image n drawn from ``generators[n]``."""
        if len(generators) != batch.num_images:
            raise ValueError(f"{len(generators)} generators for {batch.num_images} images")
        device, cfg = batch.images.device, self.config
        draws = [torch.randn(cfg.z_dim + cfg.condition_dim, generator=g, device=device) for g in generators]
        stacked = torch.stack(draws)
        return stacked[:, : cfg.z_dim], stacked[:, cfg.z_dim :]

    def real_stages(self, batch: SceneGraphBatch) -> list[torch.Tensor]:
        """The real images in [-1, 1] at every stage's size, smallest first."""
        return self.real_stages_of(batch.images, self.imagenet(batch.images), tuple(self.stage_sizes))

    # --- losses ---
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        cfg, damsm_cfg = self.config, self.damsm.config
        tokens, lengths, words, sentence, padding = self.encode_text(nets, batch)
        z, eps = self.noise(batch, ctx.generators)
        out = nets["generator"](z, sentence, words, padding, eps)
        adversarial = losses.BceTerms()
        for k, (name, fake) in enumerate(zip(self.d_names(), out.images), start=1):
            uncond, cond, _ = nets[name](fake, sentence)
            if uncond is not None:
                adversarial.add(f"adv{k}_uncond", uncond, 1.0)
            adversarial.add(f"adv{k}_cond", cond, 1.0)
        terms = losses.LossSum()
        terms.add_sum(adversarial.names, self.adversarial_sum(*adversarial.inputs()))
        if cfg.lambda_damsm > 0:
            fake = out.images[-1]
            regions, code = nets["image_encoder"](to_imagenet_normalized(fake, self.imagenet(fake)))
            match = self.matching_losses(
                regions,
                code,
                words,
                sentence,
                lengths,
                damsm_cfg.gamma1,
                damsm_cfg.gamma2,
                damsm_cfg.gamma3,
                identical_texts(tokens),
            )
            terms.add("damsm_words", match["w0"] + match["w1"], cfg.lambda_damsm)
            terms.add("damsm_sentence", match["s0"] + match["s1"], cfg.lambda_damsm)
        terms.add("kl", self.kl_loss(out.mu, out.logvar), cfg.kl_weight)
        cache = {"fakes": [f.detach() for f in out.images], "sentence": sentence}
        return StepOutput(terms.result(), terms.logs, cache=cache)

    def discriminator_step(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any, ctx: StepContext
    ) -> StepOutput | None:
        sentence = cache["sentence"]
        adversarial = losses.BceTerms()
        for k, (name, fake, real) in enumerate(zip(self.d_names(), cache["fakes"], self.real_stages(batch)), start=1):
            real_uncond, real_cond, wrong = nets[name](real, sentence, wrong=True)
            fake_uncond, fake_cond, _ = nets[name](fake, sentence)
            if real_uncond is not None and fake_uncond is not None:
                fake_parts = 3 if wrong is not None else 2
                adversarial.add(f"stage{k}_real_uncond", real_uncond, 1.0, 0.5)
                adversarial.add(f"stage{k}_real_cond", real_cond, 1.0, 0.5)
                adversarial.add(f"stage{k}_fake_uncond", fake_uncond, 0.0, 1.0 / fake_parts)
                adversarial.add(f"stage{k}_fake_cond", fake_cond, 0.0, 1.0 / fake_parts)
                if wrong is not None:
                    adversarial.add(f"stage{k}_wrong_cond", wrong, 0.0, 1.0 / 3)
            else:
                fake_parts = 2 if wrong is not None else 1
                adversarial.add(f"stage{k}_real_cond", real_cond, 1.0)
                adversarial.add(f"stage{k}_fake_cond", fake_cond, 0.0, 1.0 / fake_parts)
                if wrong is not None:
                    adversarial.add(f"stage{k}_wrong_cond", wrong, 0.0, 0.5)
        terms = losses.LossSum()
        terms.add_sum(adversarial.names, self.adversarial_sum(*adversarial.inputs()))
        return StepOutput(terms.result(), terms.logs)

    # --- inference ---
    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        if setting not in self.settings:
            raise ValueError(f"attngan has no setting {setting!r} (it takes no boxes)")
        _, _, words, sentence, padding = self.encode_text(nets, batch)
        z, eps = self.noise(batch, generators)
        out = nets["generator"](z, sentence, words, padding, eps)
        return SampleOutput(images=to_imagenet_normalized(out.images[-1], self.imagenet(out.images[-1])))
