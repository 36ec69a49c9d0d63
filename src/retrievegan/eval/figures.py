"""Figures (matplotlib object API + seaborn styles; no pyplot state; seaborn is imported by the two figures that use
it: a qualitative-figure job does not pay for its import):

* ``qualitative``: per run, the paper's qualitative figure: for a few test scene graphs, the graph as
  text, the real image, the two generated samples and, for methods that retrieve patches, every
  retrieved patch above its source training image with the crop box drawn;
* ``compatibility``: bar chart of the compatibility score with bootstrap intervals and the chance level;
* ``losses``: training-loss curves from ``models/<method>/losses.jsonl`` (one JSON object per logged
  step with a ``step`` key; every other numeric key is a curve, whichever keys the method logs).
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from retrievegan import io
from retrievegan.errors import InputError
from retrievegan.runs import RUN_NAMES, method_info

NON_LOSS_KEYS = {"step", "epoch", "iteration", "time", "wall_time", "timestamp", "lr", "seconds"}


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    FigureCanvasAgg(fig)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


# --- qualitative -------------------------------------------------------------------------------


def scene_graph_text(graph, vocab, width: int = 28) -> str:
    """The graph's relationships as lines ``"circle#0 left of square#1"`` (no ``__in_image__``)."""
    names = [f"{vocab.object_names[o.category]}#{k}" for k, o in enumerate(graph.objects[:-1])]
    lines = []
    for s, p, o in graph.triples:
        if p == 0:
            continue
        lines.append(f"{names[s]} {vocab.predicate_names[p]} {names[o]}")
    if not lines:
        lines = ["(no relationships)"] + names
    return "\n".join(textwrap.fill(line, width) for line in lines)


def pick_image_ids(image_ids: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` ids drawn from the sorted ids with ``default_rng([seed, 0x51a1])`` (same for every method)."""
    ids = sorted(image_ids)
    rng = np.random.default_rng([seed, 0x51A1])
    chosen = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(chosen)]


def qualitative_figure(
    run_dir: str | os.PathLike[str],
    method: str,
    setting: str,
    data_dir: str | os.PathLike[str],
    split: str,
    patches_dir: str | os.PathLike[str] | None,
    n_images: int,
    seed: int,
    out_png: str | os.PathLike[str],
) -> Path:
    from retrievegan.data.patches import load_patch_table
    from retrievegan.data.scene_graph import read_split, read_vocab
    from retrievegan.eval.compatibility import load_retrievals
    from retrievegan.eval.samples import load_image_array, open_run, read_png

    data_dir = Path(data_dir)
    vocab = read_vocab(data_dir / "vocab.json")
    graphs = read_split(data_dir / f"{split}.json").graphs
    index_of = {g.image_id: i for i, g in enumerate(graphs)}
    run = open_run(run_dir, method, setting, list(index_of), require_full=False)
    real = load_image_array(data_dir / f"{split}_images.npy")
    ids = pick_image_ids(run.image_ids, n_images, seed)
    retrieved: dict[int, list[int]] = {}
    bank = table = sources = None
    if method_info(method).retrieves_patches:
        if patches_dir is None:
            raise InputError(run.root, f"{method} retrieves patches: the qualitative figure needs the patch bank")
        for rec in load_retrievals(run.retrievals_path, method, setting):
            if rec["sample"] == 0:
                retrieved[rec["image_id"]] = rec["patch_ids"]
        table = load_patch_table(Path(patches_dir) / "patches.csv").set_index("patch_id")
        bank = io.load_array(
            Path(patches_dir) / "patches.npy",
            "patch bank not found (run `retrievegan patches`)",
            shape=(None, None, None, 3),
            dtype=np.uint8,
        )
        sources = {s: load_image_array(data_dir / f"{s}_images.npy") for s in sorted(set(table["split"]))}
    max_patches = max([len(retrieved.get(i, [])) for i in ids] + [0])
    ncols = 4 + max_patches
    rows_per_graph = 2 if max_patches else 1
    fig = Figure(figsize=(1.6 * ncols + 1.2, 1.75 * rows_per_graph * len(ids) + 0.4))
    grid = fig.add_gridspec(
        rows_per_graph * len(ids), ncols, width_ratios=[2.2] + [1] * (ncols - 1), hspace=0.55, wspace=0.08
    )
    size = real.shape[1]
    for r, image_id in enumerate(ids):
        graph = graphs[index_of[image_id]]
        top = r * rows_per_graph
        ax = fig.add_subplot(grid[top : top + rows_per_graph, 0])
        ax.axis("off")
        ax.text(
            0,
            1,
            f"image {image_id}\n" + scene_graph_text(graph, vocab),
            va="top",
            ha="left",
            fontsize=7,
            family="monospace",
            transform=ax.transAxes,
        )
        panels = [
            ("real", real[index_of[image_id]]),
            ("sample0", read_png(run.paths(0)[run.image_ids.index(image_id)], (size, size))),
            ("sample1", read_png(run.paths(1)[run.image_ids.index(image_id)], (size, size))),
        ]
        for c, (title, image) in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[top, c])
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        for k, patch_id in enumerate(retrieved.get(image_id, [])):
            row = table.loc[patch_id]
            ax = fig.add_subplot(grid[top, 4 + k])
            ax.imshow(bank[patch_id])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row['category_name']}\ntheme {row['theme']}", fontsize=6)
            src = sources[row["split"]][int(row["image_index"])]
            ax = fig.add_subplot(grid[top + 1, 4 + k])
            ax.imshow(src)
            s = src.shape[0]
            ax.add_patch(
                Rectangle(
                    (row["x0"] * s, row["y0"] * s),
                    (row["x1"] - row["x0"]) * s,
                    (row["y1"] - row["y0"]) * s,
                    fill=False,
                    edgecolor="red",
                    linewidth=1.2,
                )
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{row['split']} image {row['image_id']}", fontsize=5)
    fig.suptitle(
        f"{method_info(method).label} ({setting}): scene graph, real image, two samples"
        + (", retrieved patches (sample0) above their source images" if max_patches else ""),
        fontsize=9,
    )
    return save_figure(fig, out_png)


# --- compatibility -----------------------------------------------------------------------------


def compatibility_figure(compat_files: Sequence[str | os.PathLike[str]], out_png: str | os.PathLike[str]) -> Path:
    import seaborn as sns

    from retrievegan.eval.samples import read_json_object

    records = [read_json_object(p, "compatibility file") for p in compat_files]
    if not records:
        raise InputError(out_png, "no compatibility files to plot")
    labels = [f"{method_info(r['method']).label}\n{r['setting']}" for r in records]
    metrics = (("compat_single_theme", "single-theme share"), ("compat_pairwise_same_theme", "pairwise same-theme"))
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(max(5.5, 1.3 * len(records) + 2), 4.2))
        ax = fig.add_subplot()
        palette = sns.color_palette("deep", len(metrics))
        width = 0.38
        x = np.arange(len(records))
        for k, (key, label) in enumerate(metrics):
            values = np.array([r["metrics"][key] for r in records])
            low = np.array([r["metrics"][f"{key}_low"] for r in records])
            high = np.array([r["metrics"][f"{key}_high"] for r in records])
            pos = x + (k - 0.5) * width
            ax.bar(pos, values, width, color=palette[k], label=label)
            ax.errorbar(
                pos, values, yerr=[values - low, high - values], fmt="none", ecolor="black", capsize=3, linewidth=1
            )
        chance = [r["metrics"]["compat_chance_pairwise_same_theme"] for r in records]
        ax.scatter(
            x + 0.5 * width,
            chance,
            marker="_",
            s=400,
            color="black",
            zorder=3,
            label="pairwise: random same-category retrieval",
        )
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlim(-0.6, len(records) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share")
        conf = records[0]["bootstrap"]["confidence"]
        ax.set_title(f"Patch compatibility (hidden themes), {conf:.0%} bootstrap intervals", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    return save_figure(fig, out_png)


# --- losses ------------------------------------------------------------------------------------


def read_losses(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per logged step; columns ``step`` and every numeric loss key found in any line."""
    rows = []
    for obj in io.read_loss_log(path):
        row: dict[str, Any] = {"step": obj["step"]}
        for key, value in obj.items():
            if key in NON_LOSS_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                row[key] = float(value)
        rows.append(row)
    if not rows:
        raise InputError(path, "loss log is empty")
    return pd.DataFrame(rows).sort_values("step", kind="stable")


def losses_figure(
    loss_file: str | os.PathLike[str], method: str, out_png: str | os.PathLike[str], smoothing: int = 1
) -> Path:
    import seaborn as sns

    frame = read_losses(loss_file)
    keys = [c for c in frame.columns if c != "step"]
    if not keys:
        raise InputError(loss_file, "no numeric loss values besides 'step'")
    ncols = min(4, len(keys))
    nrows = -(-len(keys) // ncols)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows + 0.4))
        for k, key in enumerate(keys):
            ax = fig.add_subplot(nrows, ncols, k + 1)
            series = frame[["step", key]].dropna()
            y = series[key].rolling(smoothing, min_periods=1).mean() if smoothing > 1 else series[key]
            sns.lineplot(
                x=series["step"].to_numpy(),
                y=y.to_numpy(),
                ax=ax,
                linewidth=1,
                marker="o" if len(series) <= 20 else None,
                markersize=3,
            )
            ax.set_title(key, fontsize=8)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=6)
        label = method_info(method).label if method in RUN_NAMES else method
        fig.suptitle(
            f"{label}: training losses" + (f" (rolling mean over {smoothing})" if smoothing > 1 else ""), fontsize=9
        )
        fig.tight_layout()
    return save_figure(fig, out_png)
