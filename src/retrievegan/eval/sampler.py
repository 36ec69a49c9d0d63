"""`retrievegan sample`: images of a trained method for every scene graph of a split, in one setting.

Writes ``<out_dir>/sample0/<image_id:012d>.png`` and ``sample1/...`` (two samples per scene graph with
different seeds), ``retrievals.json`` for methods that retrieve patches, and ``manifest.json`` last (it
marks a complete folder; see docs/architecture.md). Image ``i`` of sample ``k`` uses its own
``torch.Generator`` seeded with ``derive_seed(SAMPLE_NOISE, seeds[k], image_id)``, so the output does not
depend on the batch size or on which other graphs share its batch.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from retrievegan import io, runinfo
from retrievegan.data.dataset import SceneGraphDataset, check_spec, sequential_loader, to_uint8
from retrievegan.device import pick_device
from retrievegan.errors import ConfigError
from retrievegan.progressbar import progress_bar
from retrievegan.seeds import SAMPLE_NOISE, image_generators

SAMPLE_DIRS = ("sample0", "sample1")
SEED_RULE = "torch.Generator per image seeded with retrievegan.seeds.derive_seed(3, seed, image_id)"


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    seeds: tuple[int, int] = (0, 1)  # ours: base seeds of sample0 / sample1
    batch_size: int = 32
    num_workers: int = 0
    split: Literal["train", "val", "test"] = "test"  # the paper evaluates on the test split
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        if self.seeds[0] == self.seeds[1]:
            raise ValueError("the two sample seeds must differ")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")


def write_png(path: Path, pixels: Any) -> None:
    with io.atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def sample(
    checkpoint: str | Path,
    data_dir: str | Path,
    setting: str,
    out_dir: str | Path,
    cfg: SampleConfig,
    patches_csv: str | Path | None = None,
    inputs: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample every scene graph of ``cfg.split`` twice; returns the manifest."""
    from retrievegan.io import sha256_file
    from retrievegan.train.loop import load_trained

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    device = pick_device(cfg.device, "sample.device")
    method, nets, payload = load_trained(checkpoint, device, inputs)
    if setting not in method.settings:
        raise ConfigError(f"{payload['method']} does not support setting {setting!r} (supports {method.settings})")
    if method.needs_patch_ids and patches_csv is None:
        raise ConfigError(f"{payload['method']} needs the patch table (--patches)")
    dataset = SceneGraphDataset(data_dir, cfg.split, patches_csv if method.needs_patch_ids else None)
    check_spec(method.spec, dataset.spec, dataset.graphs_path)

    for name in (*SAMPLE_DIRS, "manifest.json", "retrievals.json"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    records: list[dict[str, Any]] = []
    image_ids: list[int] = []
    bar = progress_bar(
        total=len(dataset), desc=f"sample {payload['method']} {setting}", unit="img", disable=not progress
    )
    with torch.no_grad():
        for batch in sequential_loader(dataset, cfg.batch_size, cfg.num_workers):
            ids = batch.image_ids.tolist()
            batch = method.host_prepare(batch).to(device)
            for k, seed in enumerate(cfg.seeds):
                gens = image_generators((SAMPLE_NOISE, seed), ids, device)
                result = method.sample(nets, batch, setting, gens)
                pixels = to_uint8(result.images)
                for n, image_id in enumerate(ids):
                    write_png(out_dir / SAMPLE_DIRS[k] / f"{image_id:012d}.png", pixels[n])
                if result.patch_ids is not None:
                    records += [
                        {"image_id": i, "sample": k, "patch_ids": [int(p) for p in pids]}
                        for i, pids in zip(ids, result.patch_ids)
                    ]
            image_ids += ids
            bar.update(len(ids))
    bar.close()
    if records:
        io.write_json(
            out_dir / "retrievals.json", {"method": payload["method"], "setting": setting, "records": records}
        )
    manifest = {
        "method": payload["method"],
        "setting": setting,
        "split": cfg.split,
        "num_images": len(image_ids),
        "image_size": dataset.image_size,
        "image_ids": image_ids,
        "samples": list(SAMPLE_DIRS),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "checkpoint_step": int(payload["step"]),
        "seeds": list(cfg.seeds),
        "seed_rule": SEED_RULE,
        "data_dir": str(data_dir),
        "config": runinfo.to_jsonable(cfg),
    }
    io.write_json(out_dir / "manifest.json", manifest)
    runinfo.report_provenance(out_dir / "manifest.json")
    return manifest
