"""Scene graphs as sentences, and their word vocabulary (the AttnGAN baseline's text input).

The paper (§4, "Evaluated methods"): AttnGAN synthesises images from text, so "we convert each
relationship in the graph into a sentence, and link every sentence via the conjunction word 'and'".
Here:

* one clause per relationship ``(s, p, o)``: ``"<name of s> <predicate> <name of o>"``; the ``__in_image__``
  triples (and any triple touching the ``__image__`` node) are not relationships and give no clause;
* the clauses in triple order, joined by ``" and "``: ``"circle left of square and sky above grass"``;
* **paper-silent choices (ours)**:

  - a graph without relationships becomes its object names joined by ``"and"``
    (``"circle and sky"``); a graph without any real object becomes the empty sentence, encoded as the
    single token ``<empty>``;
  - repeated categories keep their plain names (``"circle left of circle"``): the sentence reads like a
    caption, and a caption does not number its objects (AttnGAN's text has no instance identities);
  - objects in no relationship: ``isolated_objects="drop"`` (the paper's wording: only relationships
    become text) or ``"mention"`` (their names are appended as extra clauses);
  - words: lower-cased runs of letters/digits (``"left of"`` -> ``left``, ``of``; ``"wall-brick"`` ->
    ``wall``, ``brick``), like AttnGAN's ``RegexpTokenizer(r'\\w+')``;
  - at most ``max_words`` tokens: whole clauses are kept in order while they fit (a first clause
    longer than the limit is cut). AttnGAN instead keeps a random ordered subset of words, which would
    break clauses apart.

The word vocabulary is a function of the data vocabulary alone (object and predicate names, plus
"and"), so every sentence of any split is covered and no corpus file is needed: ``WordVocab.from_names``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Literal

import torch

IMAGE_OBJECT = "__image__"
IN_IMAGE = "__in_image__"
CONJUNCTION = "and"
PAD, EMPTY = "<pad>", "<empty>"
SPECIAL_TOKENS = (PAD, EMPTY)  # ids 0 and 1; words start at 2
_WORD = re.compile(r"[^\W_]+")

Isolated = Literal["drop", "mention"]


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: ``"Left of"`` -> ``["left", "of"]``."""
    return _WORD.findall(text.lower())


def graph_clauses(
    object_names: Sequence[str],
    triples: Sequence[Sequence[int]],
    predicate_names: Sequence[str],
    isolated_objects: Isolated = "drop",
) -> list[str]:
    """The clauses of one scene graph's sentence (see the module docstring).

    object_names: name of every object of the graph (``__image__`` included or not);
    triples: ``(s, p, o)`` with s, o indices into ``object_names`` and p into ``predicate_names``.
    """
    if isolated_objects not in ("drop", "mention"):
        raise ValueError(f"isolated_objects must be drop or mention, got {isolated_objects!r}")
    real = [i for i, name in enumerate(object_names) if name != IMAGE_OBJECT]
    clauses, related = [], set()
    for s, p, o in triples:
        s, p, o = int(s), int(p), int(o)
        if not (0 <= s < len(object_names) and 0 <= o < len(object_names) and 0 <= p < len(predicate_names)):
            raise ValueError(
                f"triple {(s, p, o)} refers outside {len(object_names)} objects / {len(predicate_names)} predicates"
            )
        if predicate_names[p] == IN_IMAGE or IMAGE_OBJECT in (object_names[s], object_names[o]):
            continue
        clauses.append(f"{object_names[s]} {predicate_names[p]} {object_names[o]}")
        related.update((s, o))
    if not clauses:
        return [object_names[i] for i in real]
    if isolated_objects == "mention":
        clauses += [object_names[i] for i in real if i not in related]
    return clauses


def graph_to_sentence(
    object_names: Sequence[str],
    triples: Sequence[Sequence[int]],
    predicate_names: Sequence[str],
    isolated_objects: Isolated = "drop",
) -> str:
    """One scene graph as a sentence: ``"circle left of square and sky above grass"``."""
    return f" {CONJUNCTION} ".join(graph_clauses(object_names, triples, predicate_names, isolated_objects))


@dataclasses.dataclass(frozen=True)
class WordVocab:
    """Token ids: 0 ``<pad>``, 1 ``<empty>``, then ``words`` in order."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words) or set(self.words) & set(SPECIAL_TOKENS):
            raise ValueError("words must be unique and must not contain the special tokens")

    @classmethod
    def from_names(cls, object_names: Sequence[str], predicate_names: Sequence[str]) -> WordVocab:
        """Every word a sentence of this data vocabulary can contain, sorted."""
        words = {CONJUNCTION}
        for name in (*object_names, *predicate_names):
            if name not in (IMAGE_OBJECT, IN_IMAGE):
                words.update(tokenize(name))
        return cls(tuple(sorted(words)))

    @property
    def size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.words)

    def index(self, word: str) -> int:
        try:
            return len(SPECIAL_TOKENS) + self._lookup[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary") from None

    @property
    def _lookup(self) -> dict[str, int]:
        # cached on the instance (frozen dataclass: object.__setattr__); not module-level state
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {w: i for i, w in enumerate(self.words)}
            object.__setattr__(self, "_cache", cache)
        return cache

    def encode_clauses(self, clauses: Sequence[str], max_words: int) -> list[int]:
        """Token ids of ``clauses`` joined by "and", whole clauses while they fit in ``max_words``."""
        if max_words < 1:
            raise ValueError("max_words must be >= 1")
        ids: list[int] = []
        for clause in clauses:
            words = tokenize(clause)
            extra = ([self.index(CONJUNCTION)] if ids else []) + [self.index(w) for w in words]
            if len(ids) + len(extra) > max_words:
                if not ids:
                    ids = extra[:max_words]
                break
            ids += extra
        return ids or [SPECIAL_TOKENS.index(EMPTY)]

    def decode(self, ids: Sequence[int]) -> str:
        names = (*SPECIAL_TOKENS, *self.words)
        return " ".join(names[int(i)] for i in ids if int(i) != 0)


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
    """How scene graphs become sentences (stored with the DAMSM encoders; AttnGAN reuses it)."""

    isolated_objects: Isolated = "drop"  # paper: only relationships become text (ours: or "mention")
    max_words: int = 64  # ours: AttnGAN's COCO captions use 12-18 words; a graph of 8 objects needs ~40

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ValueError("max_words must be >= 1")


def batch_tokens(
    objs: torch.Tensor,
    triples: torch.Tensor,
    obj_to_img: torch.Tensor,
    num_images: int,
    object_names: Sequence[str],
    predicate_names: Sequence[str],
    vocab: WordVocab,
    cfg: SentenceConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every scene graph of a batch (sg2im's batch layout).

    objs (O,), triples (T, 3) with s, o indexing the batch's objects, obj_to_img (O,) in [0, N)
    -> tokens (N, L) int64 (0-padded, L = longest sentence), lengths (N,) int64 (>= 1), on CPU.
    """
    objs_l = objs.tolist()
    owner = obj_to_img.tolist()
    per_image_objects: list[list[int]] = [[] for _ in range(num_images)]
    for index, image in enumerate(owner):
        per_image_objects[image].append(index)
    local = {}
    for image_objects in per_image_objects:
        for position, index in enumerate(image_objects):
            local[index] = position
    per_image_triples: list[list[tuple[int, int, int]]] = [[] for _ in range(num_images)]
    for s, p, o in triples.tolist():
        if owner[s] != owner[o]:
            raise ValueError(f"triple ({s}, {p}, {o}) links objects of different images")
        per_image_triples[owner[s]].append((local[s], p, local[o]))
    sequences = []
    for image in range(num_images):
        names = [object_names[objs_l[i]] for i in per_image_objects[image]]
        clauses = graph_clauses(names, per_image_triples[image], predicate_names, cfg.isolated_objects)
        sequences.append(vocab.encode_clauses(clauses, cfg.max_words))
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    tokens = torch.zeros(num_images, int(lengths.max()) if num_images else 1, dtype=torch.int64)
    for image, seq in enumerate(sequences):
        tokens[image, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
    return tokens, lengths
