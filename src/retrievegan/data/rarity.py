"""Appearance rarity of every (training image, category) pair (conditional IMLE supplement, Appendix A).

For training image ``k`` and category ``p`` present in it, ``c_k(p)`` is the mean colour (RGB in [0, 1]) of
the pixels of category ``p`` in the image's label map; per category a Gaussian kernel density estimate
``D_p`` (``scipy.stats.gaussian_kde``, bandwidth rule ``rarity.bandwidth``) is fitted to the colours of the
images containing it, and the **rarity score** is ``R_p(k) = 1 / D_p(c_k(p))`` (0 where ``p`` is absent).
The KDE includes the evaluated colour itself, so every density is positive and every score finite.

**Label map** (which category each pixel belongs to; the supplement's segmentation map ``x``): each real
object's ``M x M`` mask (COCO-Stuff; **Visual Genome has boxes only: the whole box is used**) is warped into
its box with the same sampling as the layout (``data.box_grid.boxes_to_grid``, bilinear), and a pixel belongs
to the object when the warped mask is >= 0.5 there. Where objects overlap, the one covering fewer pixels wins
(ours: the supplement's maps have no overlaps; a small thing lies on top of the stuff around it); ties go to
the earlier object. Pixels no object covers have no category (-1). The maps are computed at the canonical
image size (the size the models train at), from ``{split}.json`` and ``{split}_images.npy``.

**Fallback** (the KDE is undefined): a category found in fewer than ``rarity.min_images`` images, or whose
colours make ``gaussian_kde`` fail (singular covariance: e.g. one image, or all colours on a plane), gets an
isotropic Gaussian KDE with standard deviation ``rarity.fallback_bandwidth`` per channel:
``D_p(c) = mean_j N(c; c_j(p), h^2 I)``. Its scores are finite and positive (one image: ``(2 pi h^2)^(3/2)``);
``categories.csv`` names every category that used it and why.

**Loss mask** (:func:`rarity_mask`): ``M_ij = R_p(k)`` where pixel ``(i, j)`` belongs to ``p``, divided by its
maximum over the image, so every entry lies in (0, 1]; pixels without a category take the image's smallest
value (ours: the supplement's maps label every pixel).

Output of ``retrievegan rarity`` (:func:`compute_rarity`), folder ``results/<ds>/data/rarity/``:

* ``rarity.npz``: ``format``, ``train_sha256`` (of ``train.json``), ``image_ids (N,)``, ``num_categories``;
  one entry per (image, present category): ``entry_image (E,)`` (row of the split), ``entry_category (E,)``,
  ``entry_pixels (E,)``, ``entry_colour (E, 3)``, ``entry_log_density (E,)``, ``entry_rarity (E,)``; per
  category: ``category_pixels (C,)`` (total area over the split), ``category_images (C,)``, ``category_kde (C,)``
  (0 absent, 1 KDE, 2 fallback), ``category_factor (C,)`` (the KDE's bandwidth factor; NaN otherwise);
* ``categories.csv``: the same per category, readable (name, area rank, method and reason, score range);
* ``run.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from retrievegan import io, runinfo
from retrievegan.errors import InputError
from retrievegan.io import sha256_file

FORMAT = "retrievegan-rarity"
KDE_ABSENT, KDE_FITTED, KDE_FALLBACK = 0, 1, 2
KDE_NAMES = {KDE_ABSENT: "absent", KDE_FITTED: "kde", KDE_FALLBACK: "fallback"}
MASK_THRESHOLD = 0.5  # a pixel belongs to an object where its warped mask is >= this
BOX_MASK_SIZE = 8  # sources without masks (Visual Genome): the whole box, as masks_to_layout spreads it


@dataclasses.dataclass(frozen=True)
class RarityConfig:
    """The ``rarity`` config section (conditional IMLE supplement, App. A); defaults: everything off."""

    dataset: bool = False  # dataset rebalancing: the rarity batch sampler (train/rebalance.py)
    loss: bool = False  # loss rebalancing: reconstruction losses weighted by the rarity mask
    bandwidth: Literal["scott", "silverman"] | float = "scott"  # gaussian_kde bw_method (supplement silent)
    top_categories: int = 5  # supplement: the five categories with the largest total area get a batch share
    min_images: int = 5  # ours: fewer images -> the fallback KDE (n <= 3: singular covariance; 4: all equal)
    fallback_bandwidth: float = 0.05  # ours: isotropic kernel std (RGB in [0, 1]) where the KDE is undefined
    batch_size: int = 256  # images per chunk when computing the label maps (no effect on results)

    def __post_init__(self) -> None:
        if isinstance(self.bandwidth, float) and not self.bandwidth > 0:
            raise ValueError("rarity.bandwidth must be scott, silverman or a positive number")
        if self.top_categories < 1 or self.min_images < 1 or self.batch_size < 1:
            raise ValueError("rarity.top_categories, min_images and batch_size must be >= 1")
        if not self.fallback_bandwidth > 0:
            raise ValueError("rarity.fallback_bandwidth must be > 0")

    @property
    def enabled(self) -> bool:
        return self.dataset or self.loss


# --- label maps and the loss mask ------------------------------------------------------------------
def label_maps(
    objs: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor | None,
    obj_to_img: torch.Tensor,
    num_images: int,
    size: int,
) -> torch.Tensor:
    """The category of every pixel (module docstring). objs (O,) with ``__image__`` = 0 (ignored), boxes (O, 4),
    masks (O, M, M) in [0, 1] or None (whole boxes), obj_to_img (O,) -> (N, S, S) int64, -1 where no object."""
    from retrievegan.data.box_grid import boxes_to_grid, positions_in_image

    real = objs != 0
    labels = torch.full((num_images, size, size), -1, dtype=torch.int64, device=objs.device)
    if not bool(real.any()):
        return labels
    cats, img = objs[real], obj_to_img[real]
    if masks is None:
        shape = (int(cats.shape[0]), BOX_MASK_SIZE, BOX_MASK_SIZE)
        masks_real = torch.ones(shape, dtype=torch.float32, device=objs.device)
    else:
        masks_real = masks[real].float()
    grid = boxes_to_grid(boxes[real].float(), size)
    warped = F.grid_sample(masks_real.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
        :, 0
    ]
    cover = warped >= MASK_THRESHOLD  # (R, S, S)
    area = cover.flatten(1).sum(1).float()
    key = torch.where(cover, area.view(-1, 1, 1), torch.full_like(warped, float("inf")))
    position, most = positions_in_image(img, num_images)
    padded = torch.full((num_images, most, size, size), float("inf"), device=objs.device).index_put(
        (img, position), key
    )
    best, winner = padded.min(dim=1)  # first minimum: the earlier object on ties
    padded_cats = torch.full((num_images, most), -1, dtype=torch.int64, device=objs.device).index_put(
        (img, position), cats
    )
    labels = padded_cats.gather(1, winner.flatten(1)).view(num_images, size, size)
    return torch.where(torch.isinf(best), torch.full_like(labels, -1), labels)


def rarity_mask(labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The normalised rarity mask: labels (N, S, S) int64 (-1: no category), scores (N, C) = R_p(k) of each image
    -> (N, 1, S, S) float32 in (0, 1] (module docstring). A labelled pixel whose category has no positive score
    is an error (the scores were computed from other data)."""
    num = labels.shape[0]
    labelled = labels >= 0
    flat = labels.clamp(min=0).flatten(1)
    values = scores.to(torch.float64).gather(1, flat).view_as(labels)
    unscored = labelled & ~(values > 0)
    if bool(unscored.any()):
        bad = int(torch.nonzero(unscored)[0, 0])
        raise ValueError(
            f"image {bad} of the batch has a category without a positive rarity score (category "
            f"{int(labels[unscored][0])}): the scores do not belong to these images"
        )
    inf = torch.tensor(float("inf"), dtype=values.dtype, device=values.device)
    high = torch.where(labelled, values, -inf).flatten(1).max(1).values
    low = torch.where(labelled, values, inf).flatten(1).min(1).values
    has = labelled.flatten(1).any(1)
    high = torch.where(has, high, torch.ones_like(high))
    low = torch.where(has, low, torch.ones_like(low))
    filled = torch.where(labelled, values, low.view(num, 1, 1))
    return (filled / high.view(num, 1, 1)).to(torch.float32).unsqueeze(1)


# --- colours, KDE, scores ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CategoryColours:
    """Per (image, present category) entry: image row, category, pixel count, mean colour (RGB in [0, 1])."""

    image: np.ndarray  # (E,) int64
    category: np.ndarray  # (E,) int64
    pixels: np.ndarray  # (E,) int64
    colour: np.ndarray  # (E, 3) float64


def mean_colours(labels: np.ndarray, pixels: np.ndarray, num_categories: int, first_image: int = 0) -> CategoryColours:
    """labels (n, S, S) int (-1: none), pixels (n, S, S, 3) uint8 -> the mean colour of every category present in
    each image (the supplement's c_k(p)), image rows counted from ``first_image``."""
    n = labels.shape[0]
    labelled = labels >= 0
    key = (np.arange(n)[:, None, None] * num_categories + labels)[labelled]
    counts = np.bincount(key, minlength=n * num_categories)
    rgb = pixels[labelled].astype(np.float64) / 255.0
    sums = np.stack([np.bincount(key, weights=rgb[:, c], minlength=n * num_categories) for c in range(3)], 1)
    present = np.flatnonzero(counts)
    return CategoryColours(
        image=present // num_categories + first_image,
        category=present % num_categories,
        pixels=counts[present].astype(np.int64),
        colour=sums[present] / counts[present, None],
    )


@dataclasses.dataclass(frozen=True)
class CategoryKde:
    """The density of one category's colours at each of them."""

    log_density: np.ndarray  # (n,) log D_p(c_k(p))
    method: int  # KDE_FITTED or KDE_FALLBACK
    factor: float  # gaussian_kde's bandwidth factor (NaN for the fallback)
    reason: str  # why the fallback was used ("" for the KDE)


def isotropic_log_density(points: np.ndarray, bandwidth: float) -> np.ndarray:
    """log of ``mean_j N(x_i; x_j, h^2 I)`` at every point: points (n, d) -> (n,). The fallback KDE."""
    from scipy.special import logsumexp

    n, d = points.shape
    sq = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    log_kernel = -0.5 * sq / bandwidth**2 - 0.5 * d * np.log(2 * np.pi * bandwidth**2)
    return logsumexp(log_kernel, axis=1) - np.log(n)


def category_kde(colours: np.ndarray, cfg: RarityConfig) -> CategoryKde:
    """Fit the category's KDE to its colours (n, 3) and evaluate it at them; the fallback where it is undefined."""
    from scipy.stats import gaussian_kde

    n = colours.shape[0]
    reason = ""
    if n < cfg.min_images:
        reason = f"{n} image{'s' if n != 1 else ''} < rarity.min_images {cfg.min_images}"
    else:
        try:
            kde = gaussian_kde(colours.T, bw_method=cfg.bandwidth)
            log_density = kde.logpdf(colours.T)
            if np.isfinite(log_density).all():
                return CategoryKde(log_density, KDE_FITTED, float(kde.factor), "")
            reason = "gaussian_kde gave a non-finite density"
        except (ValueError, np.linalg.LinAlgError) as exc:
            reason = f"gaussian_kde undefined ({str(exc).split('.')[0]})"
    log_density = isotropic_log_density(colours, cfg.fallback_bandwidth)
    return CategoryKde(log_density, KDE_FALLBACK, float("nan"), reason)


def compute_rarity(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: RarityConfig,
    split: str = "train",
    progress: bool = True,
) -> Path:
    """``retrievegan rarity``: the rarity scores of every (image, category) pair of ``split`` (module docstring)
    -> ``<out_dir>/{rarity.npz, categories.csv, run.json}``. Returns the npz path."""
    from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
    from retrievegan.progressbar import progress_bar

    dataset = SceneGraphDataset(data_dir, split)
    names = dataset.spec.object_names
    num_categories = dataset.spec.num_objects
    pixels = io.load_array(dataset.images_path)
    size = dataset.image_size
    parts = []
    for start in progress_bar(
        range(0, len(dataset), cfg.batch_size), desc="rarity: label maps", unit="chunk", disable=not progress
    ):
        rows = range(start, min(start + cfg.batch_size, len(dataset)))
        batch = collate_scene_graphs([dataset[i] for i in rows])
        labels = label_maps(batch.objs, batch.boxes, batch.masks, batch.obj_to_img, batch.num_images, size).numpy()
        parts.append(mean_colours(labels, np.asarray(pixels[rows.start : rows.stop]), num_categories, start))
    entries = CategoryColours(
        *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(CategoryColours))
    )
    log_density = np.zeros(len(entries.image))
    cat_pixels = np.bincount(entries.category, weights=entries.pixels, minlength=num_categories).astype(np.int64)
    cat_images = np.bincount(entries.category, minlength=num_categories).astype(np.int64)
    cat_kde = np.full(num_categories, KDE_ABSENT, dtype=np.int64)
    cat_factor = np.full(num_categories, np.nan)
    reasons = [""] * num_categories
    for category in np.flatnonzero(cat_images):
        where = np.flatnonzero(entries.category == category)
        fit = category_kde(entries.colour[where], cfg)
        log_density[where] = fit.log_density
        cat_kde[category], cat_factor[category], reasons[category] = fit.method, fit.factor, fit.reason
    rarity = np.exp(-log_density)
    if not (np.isfinite(rarity).all() and (rarity > 0).all()):
        raise ValueError("rarity scores must be finite and positive")  # the KDE includes each point itself
    out_dir = Path(out_dir)
    npz = out_dir / "rarity.npz"
    arrays = {
        "format": np.array(FORMAT),
        "train_sha256": np.array(sha256_file(dataset.graphs_path)),
        "image_ids": dataset.image_ids,
        "num_categories": np.array(num_categories),
        "entry_image": entries.image,
        "entry_category": entries.category,
        "entry_pixels": entries.pixels,
        "entry_colour": entries.colour,
        "entry_log_density": log_density,
        "entry_rarity": rarity,
        "category_pixels": cat_pixels,
        "category_images": cat_images,
        "category_kde": cat_kde,
        "category_factor": cat_factor,
    }
    io.save_npz(npz, arrays)
    table = RarityTable(npz)
    io.write_text(out_dir / "categories.csv", categories_csv(table, names, reasons, cfg))
    runinfo.write_run_json(
        out_dir,
        "rarity",
        {"rarity": cfg, "data_dir": str(data_dir), "split": split},
        None,
        {
            "images": len(dataset),
            "entries": int(len(entries.image)),
            "image_size": size,
            "categories_present": int((cat_images > 0).sum()),
            "categories_fallback": [names[c] for c in np.flatnonzero(cat_kde == KDE_FALLBACK)],
            "top_categories": [names[c] for c in table.top_categories(cfg.top_categories)]
            if (cat_images > 0).sum() >= cfg.top_categories
            else None,
            "masks": "COCO-Stuff masks warped into their boxes"
            if dataset.spec.mask_size
            else "no masks in this source (Visual Genome): whole boxes",
        },
    )
    return npz


def categories_csv(table: RarityTable, names: tuple[str, ...], reasons: list[str], cfg: RarityConfig) -> str:
    """categories.csv: one row per category present in the split, by total area (largest first)."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "area_rank",
            "category",
            "name",
            "images",
            "pixels",
            "top_share",
            "kde",
            "bandwidth_factor",
            "fallback_reason",
            "rarity_min",
            "rarity_median",
            "rarity_max",
        ]
    )
    top = set(table.top_categories(min(cfg.top_categories, table.present_categories)).tolist())
    for rank, category in enumerate(table.area_order()):
        scores = table.entry_rarity[table.entry_category == category]
        factor = table.category_factor[category]
        writer.writerow(
            [
                rank + 1,
                int(category),
                names[category] if category < len(names) else "",
                int(table.category_images[category]),
                int(table.category_pixels[category]),
                category in top,
                KDE_NAMES[int(table.category_kde[category])],
                "" if np.isnan(factor) else repr(float(factor)),
                reasons[category],
                repr(float(scores.min())),
                repr(float(np.median(scores))),
                repr(float(scores.max())),
            ]
        )
    return buffer.getvalue()


# --- reading the scores ------------------------------------------------------------------------------
class RarityTable:
    """``rarity.npz`` (:func:`compute_rarity`), checked on the way in; bad files are InputErrors naming them."""

    KEYS = (
        "format",
        "train_sha256",
        "image_ids",
        "num_categories",
        "entry_image",
        "entry_category",
        "entry_pixels",
        "entry_colour",
        "entry_log_density",
        "entry_rarity",
        "category_pixels",
        "category_images",
        "category_kde",
        "category_factor",
    )

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as data:
                missing = [k for k in self.KEYS if k not in data.files]
                if missing:
                    raise InputError(self.path, f"not a rarity file (missing {missing})")
                arrays = {k: data[k] for k in self.KEYS}
        except FileNotFoundError as exc:
            raise InputError(self.path, "rarity scores not found (run `retrievegan rarity`)") from exc
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"not a readable .npz file: {exc}") from exc
        if str(arrays["format"]) != FORMAT:
            raise InputError(self.path, f"not a {FORMAT} file")
        self.train_sha256 = str(arrays["train_sha256"])
        self.image_ids = arrays["image_ids"].astype(np.int64)
        self.num_categories = int(arrays["num_categories"])
        self.entry_image = arrays["entry_image"].astype(np.int64)
        self.entry_category = arrays["entry_category"].astype(np.int64)
        self.entry_rarity = arrays["entry_rarity"].astype(np.float64)
        self.category_pixels = arrays["category_pixels"].astype(np.int64)
        self.category_images = arrays["category_images"].astype(np.int64)
        self.category_kde = arrays["category_kde"].astype(np.int64)
        self.category_factor = arrays["category_factor"].astype(np.float64)
        n, c = len(self.image_ids), self.num_categories
        if len(self.entry_image) and (
            self.entry_image.min() < 0
            or self.entry_image.max() >= n
            or self.entry_category.min() < 0
            or self.entry_category.max() >= c
        ):
            raise InputError(self.path, "an entry lies outside the images or the categories")
        if not (np.isfinite(self.entry_rarity).all() and (self.entry_rarity > 0).all()):
            raise InputError(self.path, "rarity scores must be finite and positive")
        if self.category_pixels.shape != (c,) or self.category_images.shape != (c,):
            raise InputError(self.path, f"per-category arrays must have {c} entries")

    @property
    def present_categories(self) -> int:
        return int((self.category_images > 0).sum())

    def check_dataset(self, image_ids: np.ndarray, graphs_path: str | os.PathLike[str], num_categories: int) -> None:
        """The scores belong to this split: same scene-graph file, image ids and vocabulary size."""
        if self.train_sha256 != sha256_file(Path(graphs_path)) or not np.array_equal(self.image_ids, image_ids):
            raise InputError(
                self.path,
                f"computed from another {Path(graphs_path).name} (re-run `retrievegan rarity` on the training data)",
            )
        if self.num_categories != num_categories:
            raise InputError(self.path, f"{self.num_categories} categories, the data has {num_categories}")

    def dense(self) -> np.ndarray:
        """(N, C) float64: R_p(k) of every image and category, 0 where absent."""
        out = np.zeros((len(self.image_ids), self.num_categories))
        out[self.entry_image, self.entry_category] = self.entry_rarity
        return out

    def area_order(self) -> np.ndarray:
        """The categories present in the split, largest total area first (ties: smaller index first)."""
        present = np.flatnonzero(self.category_images > 0)
        return present[np.lexsort((present, -self.category_pixels[present]))]

    def top_categories(self, count: int) -> np.ndarray:
        """(count,) the ``count`` categories with the largest total area (the supplement's batch shares)."""
        order = self.area_order()
        if len(order) < count:
            raise InputError(self.path, f"rarity.top_categories is {count} but only {len(order)} categories occur")
        return order[:count]
