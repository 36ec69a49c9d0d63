"""Data-stage throughput: synthetic benchmark rendering and preprocessing, images per second.

References are measured in the same process on the same inputs: synth with one worker process against
``workers`` processes (the files must be byte-identical), preprocessing with one decoding thread
against ``workers`` threads, and the patch bank likewise. Sizes: ``BENCH_DATA_TRAIN`` /
``BENCH_DATA_VAL`` synthetic images (default 96 / 48), ``BENCH_DATA_WORKERS`` (default: usable CPUs,
at least 2).

    python -m benchmarks.bench_data
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import print_table, row, timed

NUM_TRAIN = int(os.environ.get("BENCH_DATA_TRAIN", 96))
NUM_VAL = int(os.environ.get("BENCH_DATA_VAL", 48))
WORKERS = int(os.environ.get("BENCH_DATA_WORKERS", max(2, len(os.sched_getaffinity(0)))))
IMAGE_SIZE = 64


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run() -> list[dict]:
    from retrievegan.data.coco import CocoStuffConfig
    from retrievegan.data.patches import PatchConfig, build_patch_bank
    from retrievegan.data.preprocess import PreprocessConfig, preprocess
    from retrievegan.data.synth import SynthConfig, generate

    images = NUM_TRAIN + NUM_VAL
    cfg = SynthConfig(seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        serial_s, _ = timed(lambda: generate(cfg, tmp / "w1/coco", tmp / "w1/vg", progress=False, workers=1))
        parallel_s, _ = timed(lambda: generate(cfg, tmp / "wN/coco", tmp / "wN/vg", progress=False, workers=WORKERS))
        identical = _tree_digest(tmp / "w1") == _tree_digest(tmp / "wN")
        if not identical:
            raise AssertionError("synth output differs between 1 and several workers")
        rows.append(
            row(
                "synth",
                f"images/s (workers={WORKERS})",
                images / parallel_s,
                "images/s",
                reference=images / serial_s,
                note=f"reference: workers=1; {images} images of {cfg.min_side}-{cfg.max_side} px, "
                f"COCO + VG files; byte-identical: yes",
            )
        )
        shutil.rmtree(tmp / "w1")

        raw = tmp / "wN/coco"
        coco = CocoStuffConfig(
            instances_train=str(raw / "annotations/instances_train2017.json"),
            stuff_train=str(raw / "annotations/stuff_train2017.json"),
            image_dir_train=str(raw / "images/train2017"),
            instances_val=str(raw / "annotations/instances_val2017.json"),
            stuff_val=str(raw / "annotations/stuff_val2017.json"),
            image_dir_val=str(raw / "images/val2017"),
            num_val=max(1, NUM_VAL // 4),
            num_test=max(1, NUM_VAL // 2),
        )

        def prep(workers: int, out: str) -> dict:
            return preprocess(
                "coco_stuff",
                coco,
                PreprocessConfig(image_size=IMAGE_SIZE, seed=0, num_workers=workers),
                tmp / out,
                "bench",
                progress=False,
            )

        serial_s, stats = timed(lambda: prep(1, "p1"))
        parallel_s, _ = timed(lambda: prep(WORKERS, "pN"))
        kept = sum(stats["table_row"][s] for s in ("train", "val", "test"))
        rows.append(
            row(
                "preprocess coco_stuff",
                f"images/s (threads={WORKERS})",
                kept / parallel_s,
                "images/s",
                reference=kept / serial_s,
                note=f"reference: 1 thread; {kept} images kept of {images}, resized to {IMAGE_SIZE} px",
            )
        )

        serial_s, table = timed(
            lambda: build_patch_bank(tmp / "pN", PatchConfig(crop_size=32, num_workers=1), tmp / "b1", progress=False)
        )
        parallel_s, _ = timed(
            lambda: build_patch_bank(
                tmp / "pN", PatchConfig(crop_size=32, num_workers=WORKERS), tmp / "bN", progress=False
            )
        )
        rows.append(
            row(
                "patch bank",
                f"patches/s (threads={WORKERS})",
                len(table) / parallel_s,
                "patches/s",
                reference=len(table) / serial_s,
                note=f"reference: 1 thread; {len(table)} crops of 32 px",
            )
        )
    return rows


if __name__ == "__main__":
    print_table(run())
