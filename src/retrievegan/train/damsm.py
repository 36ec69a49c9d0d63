"""`retrievegan pretrain-damsm`: pre-train AttnGAN's DAMSM text and image encoders on the scene-graph sentences.

AttnGAN trains its generator with a frozen, pre-trained DAMSM (``code/pretrain_DAMSM.py``): a bi-LSTM text
encoder and an image encoder trained jointly with the word- and sentence-level matching losses
(``retrievegan.models.damsm``). Nothing pre-trained exists for our sentences, so this stage trains them
on the benchmark's training split (sentences from ``retrievegan.text``), before ``train --method attngan``.

AttnGAN's values (``code/cfg/DAMSM/coco.yml``, ``pretrain_DAMSM.py``) are the defaults: Adam lr 0.002, betas
(0.5, 0.999), lr x 0.98 per epoch down to lr / 10, LSTM gradient norm clipped at 0.25, batch 48, gamma1 4,
gamma2 5, gamma3 10, loss = w0 + w1 + s0 + s1, last partial batch dropped. Deviations (ours):

* AttnGAN re-creates its Adam optimiser every epoch (the moments restart); we keep one and lower its lr;
* no augmentation: AttnGAN's random horizontal flip would make "left of" / "right of" false, and random
  crops move objects against the sentence's geometry;
* ``image_encoder: cnn`` (embedded default): a small CNN trained from scratch here instead of ImageNet
  Inception-v3 (no pretrained weights on a fresh machine). ``inception`` is AttnGAN's encoder (weights from
  ``inception_weights`` or the torch hub cache; never downloaded).

Randomness: the data order of epoch e comes from ``(seed, e)``, dropout masks from ``(seed, e, step)``, the
initialisation from ``(seed, INIT)``: no global RNG.

Outputs in ``out_dir``: ``checkpoint.pt`` (format ``retrievegan-damsm``: both encoders, config, data
spec, word list), ``losses.jsonl``, ``evaluation.json`` (matching loss and in-batch retrieval accuracy
on the validation split before and after training, and chance), ``run.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from retrievegan import io, runinfo
from retrievegan.config import from_mapping
from retrievegan.data.dataset import DataSpec, SceneGraphBatch, SceneGraphDataset, collate_scene_graphs
from retrievegan.device import pick_device
from retrievegan.errors import ConfigError, InputError
from retrievegan.models.damsm import (
    CnnImageEncoder,
    InceptionImageEncoder,
    TextEncoder,
    damsm_losses,
    identical_texts,
    resolve_inception_weights,
)
from retrievegan.models.init import build
from retrievegan.progressbar import progress_bar
from retrievegan.seeds import INIT, derive_seed, tag
from retrievegan.text import SentenceConfig, WordVocab, batch_tokens

FORMAT = "retrievegan-damsm"
VERSION = 1
DROPOUT = tag("damsm-dropout")
ORDER = tag("damsm-order")


@dataclasses.dataclass(frozen=True)
class DamsmConfig:
    """The ``damsm`` config section. Defaults: AttnGAN's public code (code/cfg/DAMSM/coco.yml, model.py)."""

    seed: int = 0
    image_encoder: Literal["inception", "cnn"] = "inception"  # AttnGAN: ImageNet Inception-v3; cnn: ours
    inception_weights: str | None = None  # None: <torch hub dir>/checkpoints/inception_v3_google-0cc3c7bd.pth
    cnn_channels: tuple[int, ...] = (32, 64, 128)  # ours (image_encoder: cnn)
    embed_dim: int = 256  # AttnGAN TEXT.EMBEDDING_DIM (text feature width = both LSTM directions)
    word_dim: int = 300  # AttnGAN RNN_ENCODER ninput
    dropout: float = 0.5  # AttnGAN RNN_ENCODER drop_prob (word embeddings)
    isolated_objects: Literal["drop", "mention"] = "drop"  # paper: relationships only (retrievegan.text)
    max_words: int = 64  # ours (retrievegan.text)
    batch_size: int = 48  # AttnGAN DAMSM coco.yml
    epochs: int = 600  # AttnGAN DAMSM coco.yml MAX_EPOCH
    lr: float = 0.002  # AttnGAN ENCODER_LR
    betas: tuple[float, float] = (0.5, 0.999)  # AttnGAN
    lr_decay: float = 0.98  # AttnGAN: lr *= 0.98 after every epoch while lr > ENCODER_LR / 10
    rnn_grad_clip: float = 0.25  # AttnGAN RNN_GRAD_CLIP (gradient norm of the text encoder)
    gamma1: float = 4.0  # AttnGAN SMOOTH.GAMMA1 (attention sharpness over regions)
    gamma2: float = 5.0  # AttnGAN SMOOTH.GAMMA2 (word-to-sentence pooling)
    gamma3: float = 10.0  # AttnGAN SMOOTH.GAMMA3 (softmax scale of the matching scores)
    eval_batches: int = 50  # AttnGAN evaluates 50 validation batches
    log_every: int = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the matching losses contrast the pairs of a batch)")
        if min(self.epochs, self.embed_dim, self.word_dim, self.eval_batches, self.log_every, self.max_words) < 1:
            raise ValueError("epochs, embed_dim, word_dim, eval_batches, log_every and max_words must be >= 1")
        if self.embed_dim % 2:
            raise ValueError("embed_dim must be even (two LSTM directions)")
        if not 0 <= self.dropout < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("dropout must be in [0, 1) and lr_decay in (0, 1]")
        if len(self.cnn_channels) < 2:
            raise ValueError("cnn_channels needs at least two stages")

    @property
    def sentences(self) -> SentenceConfig:
        return SentenceConfig(isolated_objects=self.isolated_objects, max_words=self.max_words)


@dataclasses.dataclass
class Damsm:
    """A DAMSM: its config, the word vocabulary and both encoders (CPU, eval mode after ``load_damsm``)."""

    config: DamsmConfig
    spec: DataSpec
    vocab: WordVocab
    text_encoder: TextEncoder
    image_encoder: nn.Module

    def tokens(self, batch: SceneGraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L) token ids and (N,) lengths of the batch's sentences (CPU)."""
        return batch_tokens(
            batch.objs.cpu(),
            batch.triples.cpu(),
            batch.obj_to_img.cpu(),
            batch.num_images,
            self.spec.object_names,
            self.spec.predicate_names,
            self.vocab,
            self.config.sentences,
        )


def build_text_encoder(cfg: DamsmConfig, vocab: WordVocab, generator: torch.Generator) -> TextEncoder:
    return build(lambda: TextEncoder(vocab.size, cfg.word_dim, cfg.embed_dim, cfg.dropout), generator)


def build_image_encoder(cfg: DamsmConfig, generator: torch.Generator) -> nn.Module:
    if cfg.image_encoder == "cnn":
        return build(lambda: CnnImageEncoder(cfg.cnn_channels, cfg.embed_dim), generator)
    return build(lambda: InceptionImageEncoder(cfg.embed_dim), generator)


def new_damsm(cfg: DamsmConfig, spec: DataSpec, generator: torch.Generator) -> Damsm:
    """Freshly initialised encoders (+ the ImageNet Inception-v3 weights for ``image_encoder: inception``)."""
    if not spec.object_names or not spec.predicate_names:
        raise ConfigError("DAMSM needs the object and predicate names of the data (DataSpec)")
    vocab = WordVocab.from_names(spec.object_names, spec.predicate_names)
    text = build_text_encoder(cfg, vocab, generator)
    image = build_image_encoder(cfg, generator)
    if isinstance(image, InceptionImageEncoder):
        image.load_imagenet(resolve_inception_weights(cfg.inception_weights))
    return Damsm(cfg, spec, vocab, text, image)


def load_damsm(path: str | Path, spec: DataSpec | None = None) -> Damsm:
    """Rebuild a pre-trained DAMSM (eval mode, CPU). With ``spec``, its vocabularies must match the data's."""
    path = Path(path)
    payload = io.read_torch(path, "DAMSM checkpoint not found (run `retrievegan pretrain-damsm`)")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise InputError(path, f"not a {FORMAT} version {VERSION} file")
    cfg = from_mapping(DamsmConfig, payload["config"], f"{path} config")
    trained = from_mapping(DataSpec, payload["spec"], f"{path} spec")
    if spec is not None:
        for field in ("object_names", "predicate_names"):
            if tuple(getattr(spec, field)) != tuple(getattr(trained, field)):
                raise InputError(path, f"DAMSM was trained on other {field.replace('_', ' ')} than this data's")
    vocab = WordVocab(tuple(payload["words"]))
    if vocab != WordVocab.from_names(trained.object_names, trained.predicate_names):
        raise InputError(path, "word list does not match the data vocabulary it was trained on")
    generator = torch.Generator().manual_seed(0)  # placeholders, overwritten by the stored weights
    text = build_text_encoder(cfg, vocab, generator)
    image = build_image_encoder(cfg, generator)
    try:
        text.load_state_dict(payload["text_encoder"])
        image.load_state_dict(payload["image_encoder"])
    except (KeyError, RuntimeError) as exc:
        raise InputError(path, f"encoder weights do not match the stored config: {exc}") from exc
    return Damsm(cfg, trained, vocab, text.eval(), image.eval())


def _batches(dataset: SceneGraphDataset, order: np.ndarray, batch_size: int):
    for start in range(0, len(order) - batch_size + 1, batch_size):  # drop_last, as AttnGAN
        yield collate_scene_graphs([dataset[int(i)] for i in order[start : start + batch_size]])


def _losses(
    model: Damsm, batch: SceneGraphBatch, device: torch.device, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    tokens, lengths = model.tokens(batch)
    tokens = tokens.to(device)
    words, sentence = model.text_encoder(tokens, lengths, generator)
    regions, code = model.image_encoder(batch.images.to(device))
    cfg = model.config
    return damsm_losses(
        regions, code, words, sentence, lengths, cfg.gamma1, cfg.gamma2, cfg.gamma3, identical_texts(tokens)
    )


@torch.no_grad()
def evaluate(
    model: Damsm, dataset: SceneGraphDataset, batch_size: int, max_batches: int, device: torch.device
) -> dict[str, float]:
    """Mean matching losses and in-batch top-1 image->text retrieval accuracy (sentence and word level) over
    the first ``max_batches`` batches of ``dataset`` (fixed order), encoders in eval mode."""
    from retrievegan.models.damsm import word_relevance

    model.text_encoder.eval()
    model.image_encoder.eval()
    sums = {"w": 0.0, "s": 0.0, "r1_sentence": 0.0, "r1_words": 0.0}
    count = 0
    order = np.arange(len(dataset))
    for batch in _batches(dataset, order, batch_size):
        if count >= max_batches:
            break
        tokens, lengths = model.tokens(batch)
        tokens = tokens.to(device)
        words, sentence = model.text_encoder(tokens, lengths)
        regions, code = model.image_encoder(batch.images.to(device))
        cfg = model.config
        terms = damsm_losses(
            regions, code, words, sentence, lengths, cfg.gamma1, cfg.gamma2, cfg.gamma3, identical_texts(tokens)
        )
        same = identical_texts(tokens)
        sentence_scores = torch.nn.functional.cosine_similarity(code.unsqueeze(1), sentence.unsqueeze(0), dim=2)
        word_scores = word_relevance(regions, words, lengths, cfg.gamma1, cfg.gamma2)
        # a hit: the top-scored text is the image's own, or one identical to it
        hit_s = same[torch.arange(len(tokens)), sentence_scores.argmax(dim=1)]
        hit_w = same[torch.arange(len(tokens)), word_scores.argmax(dim=1)]
        sums["w"] += float(terms["w0"] + terms["w1"])
        sums["s"] += float(terms["s0"] + terms["s1"])
        sums["r1_sentence"] += float(hit_s.float().mean())
        sums["r1_words"] += float(hit_w.float().mean())
        count += 1
    if count == 0:
        raise ConfigError(f"damsm: the {dataset.split} split has fewer than batch_size={batch_size} images")
    out = {f"{k}_loss" if k in ("w", "s") else k: v / count for k, v in sums.items()}
    out["loss"] = out["w_loss"] + out["s_loss"]
    out["batches"] = count
    return out


def pretrain_damsm(
    cfg: DamsmConfig, data_dir: str | Path, out_dir: str | Path, progress: bool = True, eval_split: str = "val"
) -> dict[str, Any]:
    """Train the DAMSM encoders on ``<data_dir>/train.json``; write the run folder; return the evaluation."""
    from retrievegan.io import sha256_file
    from retrievegan.train.checkpoint import save

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    device = pick_device(cfg.device, "damsm.device")
    train_set = SceneGraphDataset(data_dir, "train")
    eval_set = SceneGraphDataset(data_dir, eval_split)
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"damsm.batch_size {cfg.batch_size} exceeds the {len(train_set)} training images")
    model = new_damsm(cfg, train_set.spec, torch.Generator().manual_seed(derive_seed(cfg.seed, INIT)))
    model.text_encoder.to(device)
    model.image_encoder.to(device)
    eval_batch = min(cfg.batch_size, len(eval_set))
    before = evaluate(model, eval_set, eval_batch, cfg.eval_batches, device)

    params = [p for net in (model.text_encoder, model.image_encoder) for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    steps_per_epoch = len(train_set) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    lines: list[str] = []
    step, lr, start = 0, cfg.lr, time.perf_counter()
    bar = progress_bar(total=total, desc="pretrain damsm", unit="step", disable=not progress, mininterval=30.0)
    for epoch in range(cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.text_encoder.train()
        model.image_encoder.train()
        order = np.random.default_rng(derive_seed(cfg.seed, ORDER, epoch)).permutation(len(train_set))
        for batch in _batches(train_set, order, cfg.batch_size):
            dropout = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, DROPOUT, epoch, step))
            terms = _losses(model, batch, device, dropout)
            loss = terms["w0"] + terms["w1"] + terms["s0"] + terms["s1"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.text_encoder.parameters(), cfg.rnn_grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                record = {
                    "step": step,
                    "epoch": epoch,
                    "lr": lr,
                    "loss": round(float(loss.detach()), 6),
                    **{k: round(float(v.detach()), 6) for k, v in terms.items()},
                }
                lines.append(json.dumps(record, sort_keys=True) + "\n")
        if lr > cfg.lr / 10:
            lr *= cfg.lr_decay
    bar.close()
    wall = time.perf_counter() - start
    model.text_encoder.cpu().eval()
    model.image_encoder.cpu().eval()
    after = evaluate(model, eval_set, eval_batch, cfg.eval_batches, torch.device("cpu"))
    evaluation = {
        "split": eval_split,
        "batch_size": eval_batch,
        "chance_r1": 1.0 / eval_batch,
        "before": before,
        "after": after,
        "steps": step,
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": runinfo.to_jsonable(cfg),
        "spec": runinfo.to_jsonable(train_set.spec),
        "words": list(model.vocab.words),
        "step": step,
        "text_encoder": model.text_encoder.state_dict(),
        "image_encoder": model.image_encoder.state_dict(),
    }
    save(out_dir / "checkpoint.pt", payload)
    io.write_text(out_dir / "losses.jsonl", "".join(lines))
    io.write_json(out_dir / "evaluation.json", evaluation)
    runinfo.write_run_json(
        out_dir,
        "pretrain-damsm",
        cfg,
        cfg.seed,
        {
            "data_dir": str(data_dir),
            "device": str(device),
            "steps": step,
            "image_encoder": (
                "inception: ImageNet Inception-v3, frozen trunk (AttnGAN)"
                if cfg.image_encoder == "inception"
                else "cnn: trained from scratch here; substitutes AttnGAN's ImageNet Inception-v3"
            ),
            "checkpoint_sha256": sha256_file(out_dir / "checkpoint.pt"),
            "evaluation": evaluation,
        },
        measured={"train_seconds": round(wall, 3)},
    )
    return {**evaluation, "train_seconds": round(wall, 3)}


def damsm_config(params: Mapping[str, Any] | None) -> DamsmConfig:
    return from_mapping(DamsmConfig, params, "damsm")
