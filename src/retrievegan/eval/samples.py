"""Reading the sample folders every method writes (docs/architecture.md, "Methods, settings, samples").

``results/<ds>/samples/<method>/<setting>/``::

    manifest.json     {"method", "setting", "checkpoint_sha256", "num_images"?, "image_size"?, "seeds"?, ...}
    sample0/<image_id:012d>.png, sample1/<image_id:012d>.png
    retrievals.json   (methods that retrieve patches)

Torch-free (the light report stages read sample folders and JSON files without importing torch): the image
datasets torch-fidelity / LPIPS read are in :mod:`retrievegan.eval.image_datasets`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retrievegan import io
from retrievegan.errors import InputError

SAMPLE_DIRS = ("sample0", "sample1")
_NAME = re.compile(r"^(\d{12})\.png$")


@dataclasses.dataclass(frozen=True)
class SampleRun:
    """A validated sample folder."""

    root: Path
    method: str
    setting: str
    manifest: dict[str, Any]
    image_ids: tuple[int, ...]  # sorted

    @property
    def checkpoint_sha256(self) -> str:
        return str(self.manifest["checkpoint_sha256"])

    def paths(self, sample: int) -> list[Path]:
        return [self.root / SAMPLE_DIRS[sample] / f"{i:012d}.png" for i in self.image_ids]

    @property
    def retrievals_path(self) -> Path:
        return self.root / "retrievals.json"


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    data = io.read_json(path, f"{what} not found")
    if not isinstance(data, dict):
        raise InputError(path, f"{what} must be a JSON object")
    return data


def _ids_in(folder: Path) -> list[int]:
    if not folder.is_dir():
        raise InputError(folder, "sample folder not found")
    ids = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("."):
            continue
        match = _NAME.match(entry)
        if not match:
            raise InputError(folder / entry, "unexpected file in a sample folder (expected <image_id:012d>.png)")
        ids.append(int(match.group(1)))
    return ids


def open_run(
    run_dir: str | os.PathLike[str],
    method: str | None = None,
    setting: str | None = None,
    expected_ids: Sequence[int] | None = None,
    require_full: bool = True,
) -> SampleRun:
    """Validate a sample folder: manifest keys, method/setting, identical image ids in sample0 and
    sample1, and (``expected_ids``) ids from the evaluated split, all of them if ``require_full``."""
    root = Path(run_dir)
    manifest_path = root / "manifest.json"
    manifest = read_json_object(manifest_path, "sample manifest")
    for key in ("method", "setting", "checkpoint_sha256"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise InputError(manifest_path, f"missing or empty string key {key!r}")
    if method is not None and manifest["method"] != method:
        raise InputError(manifest_path, f"method is {manifest['method']!r}, expected {method!r}")
    if setting is not None and manifest["setting"] != setting:
        raise InputError(manifest_path, f"setting is {manifest['setting']!r}, expected {setting!r}")
    ids0 = _ids_in(root / SAMPLE_DIRS[0])
    ids1 = _ids_in(root / SAMPLE_DIRS[1])
    if not ids0:
        raise InputError(root / SAMPLE_DIRS[0], "no samples")
    if set(ids0) != set(ids1):
        only0 = sorted(set(ids0) - set(ids1))
        only1 = sorted(set(ids1) - set(ids0))
        where, record = (root / SAMPLE_DIRS[1], only0[0]) if only0 else (root / SAMPLE_DIRS[0], only1[0])
        raise InputError(
            where,
            f"sample0 and sample1 hold different image ids ({len(only0)} only in sample0, "
            f"{len(only1)} only in sample1)",
            f"image id {record}",
        )
    if expected_ids is not None:
        expected = set(int(i) for i in expected_ids)
        extra = sorted(set(ids0) - expected)
        if extra:
            raise InputError(
                root / SAMPLE_DIRS[0], f"{len(extra)} image id(s) not in the evaluated split", f"image id {extra[0]}"
            )
        missing = sorted(expected - set(ids0))
        if missing and require_full:
            raise InputError(
                root / SAMPLE_DIRS[0],
                f"{len(missing)} of {len(expected)} image(s) of the evaluated "
                "split are missing (evaluation.require_full_split)",
                f"image id {missing[0]}",
            )
    if "num_images" in manifest and manifest["num_images"] != len(ids0):
        raise InputError(manifest_path, f"num_images is {manifest['num_images']!r} but sample0 holds {len(ids0)}")
    return SampleRun(
        root=root,
        method=manifest["method"],
        setting=manifest["setting"],
        manifest=manifest,
        image_ids=tuple(sorted(ids0)),
    )


def read_png(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8; the file must be an RGB PNG of ``size`` (H, W) when given."""
    try:
        with Image.open(path) as img:
            if img.mode != "RGB":
                raise InputError(path, f"expected an RGB image, got mode {img.mode}")
            array = np.array(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise InputError(path, "sample image not found") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read image: {exc}") from exc
    if size is not None and array.shape[:2] != tuple(size):
        raise InputError(
            path,
            f"image is {array.shape[1]}x{array.shape[0]} px, the real images are "
            f"{size[1]}x{size[0]} (metrics compare images at the same resolution)",
        )
    return array


def load_image_array(path: str | os.PathLike[str]) -> np.ndarray:
    """``{split}_images.npy`` memory-mapped, checked to be (N, S, S, 3) uint8."""
    path = Path(path)
    images = io.load_array(path, "image array not found (run `retrievegan preprocess`)")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(path, f"expected (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
    return images
