"""`retrievegan gcn-features`: a trained method's scene-graph encoder output for every patch-bank object.

RetrieveGAN pre-filters the patch bank with the graph-convolution features of a trained sg2im model
(k nearest candidates of the same category). ``gcn_features`` runs the encoder over every scene graph
of every split and writes ``(P, D)`` float32 whose row ``i`` is the feature vector of the object in row
``i`` of ``patches.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan import io, runinfo
from retrievegan.data.dataset import SceneGraphDataset, check_spec, sequential_loader
from retrievegan.data.patches import load_patch_table
from retrievegan.data.scene_graph import SPLITS
from retrievegan.device import pick_device
from retrievegan.errors import InputError
from retrievegan.progressbar import progress_bar


def gcn_features(
    checkpoint: str | Path,
    data_dir: str | Path,
    patches_csv: str | Path,
    out_path: str | Path,
    batch_size: int = 64,
    device_name: str = "auto",
    progress: bool = True,
) -> np.ndarray:
    """Write ``out_path`` (P, D) float32 aligned with ``patches_csv`` and ``<stem>.run.json`` beside it."""
    from retrievegan.io import sha256_file
    from retrievegan.train.loop import load_trained

    checkpoint, patches_csv, out_path = Path(checkpoint), Path(patches_csv), Path(out_path)
    device = pick_device(device_name)
    method, nets, payload = load_trained(checkpoint, device)
    num_patches = len(load_patch_table(patches_csv))
    features: np.ndarray | None = None
    filled = np.zeros(num_patches, dtype=bool)
    with torch.no_grad():
        for split in SPLITS:
            dataset = SceneGraphDataset(data_dir, split, patches_csv)
            check_spec(method.spec, dataset.spec, dataset.graphs_path)
            for batch in progress_bar(
                sequential_loader(dataset, batch_size, 0),
                desc=f"gcn features {split}",
                disable=not progress,
                unit="batch",
            ):
                batch = batch.to(device)
                vecs = method.object_features(nets, batch).float().cpu().numpy()
                real = batch.real_objects.cpu().numpy()
                rows = batch.patch_ids.cpu().numpy()[real]
                if features is None:
                    features = np.zeros((num_patches, vecs.shape[1]), dtype=np.float32)
                if filled[rows].any():
                    raise InputError(
                        patches_csv, "a patch row is claimed by two objects", f"patch_id {rows[filled[rows]][0]}"
                    )
                features[rows] = vecs[real]
                filled[rows] = True
    if features is None or not filled.all():
        missing = int((~filled).sum())
        raise InputError(patches_csv, f"{missing} patch rows have no object in the scene graphs of {data_dir}")
    io.save_npy(out_path, features)
    record: dict[str, Any] = runinfo.run_record(
        "gcn-features",
        {"batch_size": batch_size, "device": str(device)},
        None,
        {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint),
            "method": payload["method"],
            "data_dir": str(data_dir),
            "patches_csv": str(patches_csv),
            "shape": list(features.shape),
        },
    )
    io.write_json(out_path.with_name(out_path.stem + ".run.json"), record)
    runinfo.report_provenance(out_path.with_name(out_path.stem + ".run.json"))
    return features
