"""AttnGAN's Deep Attentional Multimodal Similarity Model (DAMSM): text and image encoders, matching losses.

Facts from AttnGAN's public code (``code/model.py`` RNN_ENCODER / CNN_ENCODER, ``code/miscc/losses.py``
words_loss / sent_loss, ``code/cfg/DAMSM/coco.yml``), re-implemented:

* ``TextEncoder``: word embedding (dropout 0.5) -> one-layer bidirectional LSTM; word features = the
  LSTM outputs ``(N, D, L)``, sentence feature = the last hidden states of both directions ``(N, D)``.
* Image encoders, both giving region features ``(N, D, h, w)`` and a global code ``(N, D)``:

  - ``InceptionImageEncoder`` (AttnGAN): ImageNet Inception-v3, frozen; regions = ``Mixed_6e`` (17 x 17 at
    299 px) through a trainable 1x1 conv, global = the pooled ``Mixed_7c`` through a trainable linear layer.
    The ImageNet weights come from a configured path or the torch hub cache, never downloaded.
  - ``CnnImageEncoder`` (ours, the embedded default): a small CNN trained from scratch together with the
    text encoder on the benchmark (no pretrained weights exist on a fresh machine). Regions = the
    second-to-last stage, global = the pooled last stage.

* ``damsm_losses``: the word-level loss (attention of every word over the image regions, relevance
  ``log sum_l exp(gamma2 cos(e_l, c_l))``, scaled by gamma3, cross-entropy over the batch in both directions)
  and the sentence-level loss (cosine of global codes, scaled by gamma3, both directions). As in the code,
  the 1/gamma2 exponent of the AttnGAN paper's eq. 10 is not applied.

Randomness: the embedding dropout draws from an explicit ``torch.Generator`` (none: no dropout).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from retrievegan import io
from retrievegan.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from retrievegan.models.init import meta_device

INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"  # torchvision IMAGENET1K_V1


class TextEncoder(nn.Module):
    """tokens (N, L) int64 (0 = padding), lengths (N,) -> words (N, D, L), sentence (N, D).

    ``D = hidden_dim`` (``hidden_dim / 2`` per direction, AttnGAN's nhidden = EMBEDDING_DIM).
    """

    def __init__(self, num_words: int, word_dim: int = 300, hidden_dim: int = 256, dropout: float = 0.5):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError("hidden_dim must be even (two LSTM directions)")
        self.dropout = dropout
        self.embedding = nn.Embedding(num_words, word_dim)
        self.rnn = nn.LSTM(word_dim, hidden_dim // 2, num_layers=1, batch_first=True, bidirectional=True)

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        self.embedding.weight.uniform_(-0.1, 0.1, generator=generator)  # AttnGAN init_weights
        bound = 1.0 / math.sqrt(self.rnn.hidden_size)  # PyTorch's LSTM default, from the generator
        for param in self.rnn.parameters():
            param.uniform_(-bound, bound, generator=generator)

    def forward(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        generator: torch.Generator | None = None,
        order: torch.Tensor | None = None,
        restore: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``order`` / ``restore`` (N,) on the tokens' device (:func:`sort_by_length`), with ``lengths`` then the
        host lengths in ``order``: the rows go through the LSTM longest first and come back in their order, the
        permutations ``pack_padded_sequence`` would make itself, without reading a device tensor on the host (a
        GPU synchronisation). Same numbers; dropout masks then follow the sorted rows."""
        if order is not None:
            tokens = tokens.index_select(0, order)
        emb = self.embedding(tokens)
        if generator is not None and self.training and self.dropout > 0:
            keep = torch.rand(emb.shape, generator=generator, device=emb.device) >= self.dropout
            emb = emb * keep / (1.0 - self.dropout)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=order is not None)
        output, (hidden, _) = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=tokens.shape[1])
        if restore is not None:
            output, hidden = output.index_select(0, restore), hidden.index_select(1, restore)
        words = output.transpose(1, 2)  # (N, D, L), zeros at padding
        sentence = hidden.transpose(0, 1).reshape(tokens.shape[0], -1)  # (N, D): [forward last, backward first]
        return words, sentence


def sort_by_length(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, restore) (N,) int64 for host ``lengths`` (N,): ``order`` puts the rows longest first exactly as
    ``pack_padded_sequence(enforce_sorted=False)`` would (the same ``torch.sort``), ``restore`` undoes it."""
    _, order = torch.sort(lengths, descending=True)
    return order, torch.argsort(order)


class CnnImageEncoder(nn.Module):
    """images (N, 3, S, S) ImageNet-normalised -> regions (N, D, S / 2^(k-1), ...), global code (N, D).

    ``k = len(channels)`` stages of (3x3 stride-2 conv, BatchNorm, LeakyReLU 0.2); ours.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), embed_dim: int = 256):
        super().__init__()
        if len(channels) < 2:
            raise ValueError("the CNN image encoder needs at least two stages")
        stages, previous = [], 3
        for width in channels:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.LeakyReLU(0.2),
                )
            )
            previous = width
        self.stages = nn.ModuleList(stages)
        self.region_proj = nn.Conv2d(channels[-2], embed_dim, 1, bias=False)
        self.global_proj = nn.Linear(channels[-1], embed_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        for stage in self.stages[:-1]:
            x = stage(x)
        regions = self.region_proj(x)
        pooled = self.stages[-1](x).mean(dim=(2, 3))
        return regions, self.global_proj(pooled)


class InceptionImageEncoder(nn.Module):
    """AttnGAN's CNN_ENCODER: frozen ImageNet Inception-v3 + trainable projections.

    images (N, 3, S, S) ImageNet-normalised (resized to 299 x 299 bilinearly) -> regions (N, D, 17, 17),
    global code (N, D). Construct, then ``load_imagenet(path)``; the ImageNet part stays frozen.
    """

    def __init__(self, embed_dim: int = 256):
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        self.trunk_a = nn.Sequential(
            net.Conv2d_1a_3x3,
            net.Conv2d_2a_3x3,
            net.Conv2d_2b_3x3,
            nn.MaxPool2d(3, stride=2),
            net.Conv2d_3b_1x1,
            net.Conv2d_4a_3x3,
            nn.MaxPool2d(3, stride=2),
            net.Mixed_5b,
            net.Mixed_5c,
            net.Mixed_5d,
            net.Mixed_6a,
            net.Mixed_6b,
            net.Mixed_6c,
            net.Mixed_6d,
            net.Mixed_6e,
        )
        self.trunk_b = nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c)
        self.region_proj = nn.Conv2d(768, embed_dim, 1, bias=False)
        self.global_proj = nn.Linear(2048, embed_dim)
        for param in (*self.trunk_a.parameters(), *self.trunk_b.parameters()):
            param.requires_grad_(False)

    @torch.no_grad()
    def init_parameters(self, generator: torch.Generator) -> None:
        from retrievegan.models.init import initialize_

        initialize_(self.trunk_a, generator)  # placeholders until load_imagenet
        initialize_(self.trunk_b, generator)
        self.region_proj.weight.uniform_(-0.1, 0.1, generator=generator)  # AttnGAN init_trainable_weights
        self.global_proj.weight.uniform_(-0.1, 0.1, generator=generator)
        self.global_proj.bias.zero_()

    def load_imagenet(self, path: str | Path) -> None:
        from torchvision.models import inception_v3

        from retrievegan.errors import InputError

        state = io.read_torch(path, "Inception-v3 weights not found")
        with meta_device():  # no allocation, no global-RNG initialisation
            reference = inception_v3(weights=None, aux_logits=True, init_weights=False)
        reference = reference.to_empty(device="cpu")
        try:
            reference.load_state_dict(state)  # strict: every parameter and buffer comes from the file
        except RuntimeError as exc:
            raise InputError(path, f"not torchvision Inception-v3 ImageNet weights: {exc}") from exc
        names = dict(reference.named_children())
        own = [m for m in (*self.trunk_a, *self.trunk_b) if not isinstance(m, nn.MaxPool2d)]
        ref = [
            names[k]
            for k in (
                "Conv2d_1a_3x3",
                "Conv2d_2a_3x3",
                "Conv2d_2b_3x3",
                "Conv2d_3b_1x1",
                "Conv2d_4a_3x3",
                "Mixed_5b",
                "Mixed_5c",
                "Mixed_5d",
                "Mixed_6a",
                "Mixed_6b",
                "Mixed_6c",
                "Mixed_6d",
                "Mixed_6e",
                "Mixed_7a",
                "Mixed_7b",
                "Mixed_7c",
            )
        ]
        for mine, theirs in zip(own, ref, strict=True):
            mine.load_state_dict(theirs.state_dict())

    def train(self, mode: bool = True) -> InceptionImageEncoder:
        super().train(mode)
        self.trunk_a.eval()  # frozen ImageNet network: BatchNorm statistics stay ImageNet's
        self.trunk_b.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        features = self.trunk_a(x)  # (N, 768, 17, 17)
        pooled = self.trunk_b(features).mean(dim=(2, 3))  # (N, 2048)
        return self.region_proj(features), self.global_proj(pooled)


def resolve_inception_weights(configured: str | None) -> Path:
    """The ImageNet Inception-v3 file: ``configured`` or the torch hub cache; else MissingWeightsError."""
    from retrievegan.weights import resolve_weights

    return resolve_weights(
        configured,
        INCEPTION_URL,
        "ImageNet Inception-v3 (AttnGAN's DAMSM image encoder)",
        "damsm.inception_weights",
        "Or use damsm.image_encoder: cnn (trained from scratch here).",
    )


ImagenetStats = tuple[torch.Tensor, torch.Tensor]  # ImageNet mean, std (1, 3, 1, 1)


def imagenet_stats(device: torch.device, dtype: torch.dtype) -> ImagenetStats:
    """ImageNet mean and std (1, 3, 1, 1) on ``device``, copied without waiting; made once and passed to
    :func:`to_imagenet_normalized` / :func:`to_tanh_range` (made from a list at every call they were a blocking
    host -> device copy per call on a GPU)."""
    return tuple(
        torch.tensor(v, dtype=dtype).view(1, 3, 1, 1).to(device, non_blocking=True)
        for v in (IMAGENET_MEAN, IMAGENET_STD)
    )


def to_imagenet_normalized(images: torch.Tensor, stats: ImagenetStats) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] (tanh output) -> ImageNet mean/std normalised (``stats``: from ``imagenet_stats``)."""
    mean, std = stats
    return ((images + 1) / 2 - mean) / std


def to_tanh_range(images: torch.Tensor, stats: ImagenetStats) -> torch.Tensor:
    """(N, 3, S, S) ImageNet-normalised -> [-1, 1] (the range of AttnGAN's generator and discriminators)."""
    mean, std = stats
    return (images * std + mean) * 2 - 1


def word_relevance(
    regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, gamma1: float, gamma2: float
) -> torch.Tensor:
    """Word-level image-text relevance of every (image, text) pair of a batch.

    regions (N, D, h, w), words (M, D, L) (padding beyond ``lengths`` (M,)) -> (N, M) with entry (i, j) =
    ``log sum_l exp(gamma2 * cos(e_jl, c_ijl))``, ``c_ijl`` = the regions of image i attended by word l of
    text j (softmax over words per region, then softmax over regions scaled by gamma1; AttnGAN eq. 7-10).
    """
    n, d = regions.shape[:2]
    m, _, length = words.shape
    context = regions.reshape(n, d, -1).float()  # (N, D, R)
    words = words.float()
    valid = torch.arange(length, device=words.device).view(1, length) < lengths.to(words.device).view(m, 1)  # (M, L)
    logits = torch.einsum("ndr,mdl->nmrl", context, words)  # (N, M, R, L)
    logits = logits.masked_fill(~valid.view(1, m, 1, length), float("-inf"))
    attn = logits.softmax(dim=3)  # over the words of text j, per region (AttnGAN eq. 8)
    attn = (attn.transpose(2, 3) * gamma1).softmax(dim=3)  # (N, M, L, R): over regions (eq. 9)
    weighted = torch.einsum("ndr,nmlr->nmdl", context, attn)  # (N, M, D, L)
    cos = F.cosine_similarity(weighted, words.unsqueeze(0), dim=2, eps=1e-8)  # (N, M, L)
    cos = (cos * gamma2).masked_fill(~valid.unsqueeze(0), float("-inf"))
    return torch.logsumexp(cos, dim=2)


def damsm_losses(
    regions: torch.Tensor,
    image_code: torch.Tensor,
    words: torch.Tensor,
    sentence: torch.Tensor,
    lengths: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    same_text: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """DAMSM matching losses of a batch of N matching (image i, text i) pairs.

    regions (N, D, h, w), image_code (N, D), words (N, D, L), sentence (N, D), lengths (N,);
    ``same_text`` (N, N) bool: pairs (i, j != i) whose texts are identical, excluded as negatives (AttnGAN
    masks same-class pairs the same way). Returns scalars ``w0`` (images -> texts), ``w1`` (texts -> images),
    ``s0``, ``s1`` (sentence level, same directions).
    """
    n = regions.shape[0]
    labels = torch.arange(n, device=regions.device)
    word_scores = word_relevance(regions, words, lengths, gamma1, gamma2) * gamma3  # (N images, N texts)
    sentence_scores = (
        F.cosine_similarity(image_code.float().unsqueeze(1), sentence.float().unsqueeze(0), dim=2, eps=1e-8) * gamma3
    )
    if same_text is not None:
        exclude = same_text.to(regions.device) & ~torch.eye(n, dtype=torch.bool, device=regions.device)
        word_scores = word_scores.masked_fill(exclude, float("-inf"))
        sentence_scores = sentence_scores.masked_fill(exclude, float("-inf"))
    return {
        "w0": F.cross_entropy(word_scores, labels),
        "w1": F.cross_entropy(word_scores.t(), labels),
        "s0": F.cross_entropy(sentence_scores, labels),
        "s1": F.cross_entropy(sentence_scores.t(), labels),
    }


def identical_texts(tokens: torch.Tensor) -> torch.Tensor:
    """tokens (N, L) -> (N, N) bool: rows with identical token sequences (padding included)."""
    return (tokens.unsqueeze(0) == tokens.unsqueeze(1)).all(dim=2)
