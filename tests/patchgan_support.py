"""Tiny RetrieveGAN / PasteGAN configurations and their extra inputs on the 32 px `tiny_dataset` (16 px patches)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

# every network a few thousand parameters: a CPU step takes a fraction of a second
TINY_PATCH_GAN: dict[str, Any] = {
    "embedding_dim": 8,
    "gconv_dim": 8,
    "gconv_hidden_dim": 16,
    "gconv_num_layers": 2,
    "crop_encoder_arch": "C3-8-2,C3-8-2",  # 16 px -> 4 x 4
    "crop_dim": 8,
    "refiner_layers": 2,
    "refiner_hidden_dim": 8,
    "attention_dim": 8,
    "decoder_dims": [16, 8, 8],  # 8 x 8 canvas -> 32 x 32
    "d_img_arch": "C4-8-2,C4-8-2",
    "d_obj_arch": "C4-8-2,C4-8-2",
    "d_obj_crop_size": 16,
    "d_obj_fc_dim": 16,
    "p_img_weight": 0.0,
    "p_obj_weight": 0.0,
}

TINY_RETRIEVAL: dict[str, Any] = {"k": 4, "embed_dim": 8, "embed_hidden": 16, "tau": 1.0}

ABLATIONS = {
    "retrievegan": (True, True),
    "retrievegan_no_gt_no_occur": (False, False),
    "retrievegan_gt_only": (True, False),
    "retrievegan_occur_only": (False, True),
}


def retrievegan_params(method: str = "retrievegan", **overrides: Any) -> dict[str, Any]:
    gt, occur = ABLATIONS[method]
    return {**TINY_PATCH_GAN, "retrieval": TINY_RETRIEVAL, "gt_selection": gt, "cooccurrence": occur, **overrides}


def pastegan_params(**overrides: Any) -> dict[str, Any]:
    # test_top 5: the fixture's pre-filter keeps 8 candidates per object
    return {
        **TINY_PATCH_GAN,
        "p_sel_weight": 0.0,
        "decoder_res_blocks": 1,
        "eval_mode_after": -1,
        "test_top": 5,
        **overrides,
    }


@dataclasses.dataclass(frozen=True)
class PatchInputs:
    patches_csv: Path
    patches: Path
    candidates: Path
    patch_features: Path
    cooccur_embeddings: Path

    def retrievegan(self) -> dict[str, str]:
        return {
            "patches": str(self.patches),
            "candidates": str(self.candidates),
            "patch_features": str(self.patch_features),
            "cooccur_embeddings": str(self.cooccur_embeddings),
        }

    def pastegan(self) -> dict[str, str]:
        return {"patches": str(self.patches), "candidates": str(self.candidates)}


def build_inputs(patches_dir: Path, out_dir: Path, seed: int = 0, themed: bool = False) -> PatchInputs:
    """Random frozen patch features and co-occurrence embeddings, and pre-filter candidates (k = 8) computed
    by the real pre-filter from random "GCN features". ``themed``: the features and co-occurrence embeddings
    carry each patch's hidden theme (features: 3 x one-hot(theme) + unit noise; co-occurrence: one-hot(theme)),
    so that learning to retrieve same-theme patches is possible and generalises to other images."""
    from retrievegan.data.patches import load_patch_table
    from retrievegan.embed.prefilter import PrefilterConfig, prefilter_candidates

    table = load_patch_table(patches_dir / "patches.csv")
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = rng.normal(size=(len(table), 12)).astype(np.float32)
    cooc = rng.normal(size=(len(table), 6)).astype(np.float32)
    cooc /= np.linalg.norm(cooc, axis=1, keepdims=True)
    if themed:
        theme = table["theme"].to_numpy(dtype=np.int64)
        onehot = np.eye(max(12, int(theme.max()) + 1), dtype=np.float32)[theme]
        features += 3.0 * onehot[:, :12]
        cooc = onehot.copy()
    gcn = rng.normal(size=(len(table), 5)).astype(np.float32)
    cand, _ = prefilter_candidates(gcn, table, PrefilterConfig(k=8, device="cpu"))
    paths = PatchInputs(
        patches_dir / "patches.csv",
        patches_dir / "patches.npy",
        out_dir / "candidates.npy",
        out_dir / "patch_features.npy",
        out_dir / "cooccur_embeddings.npy",
    )
    np.save(paths.candidates, cand)
    np.save(paths.patch_features, features)
    np.save(paths.cooccur_embeddings, cooc)
    return paths
