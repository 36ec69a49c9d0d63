"""Evaluation throughput: FID + IS images per second, and the gain from the stored real statistics.

``retrievegan metrics`` extracts features of the generated images only and reads the real split's
statistics from the declared ``.npz`` written once by ``retrievegan real-stats``. The reference is
torch-fidelity's ``calculate_metrics`` on the same two inputs without its cache, i.e. extracting the real
images' features on every call, measured in the same process; the two must give the same FID and IS
(raises otherwise). Also: DS (LPIPS form on synthnet) pairs per second, and, when Inception-v3 weights
are on this machine, the same FID + IS figures with ``inception-v3-compat`` (skipped otherwise, never
downloaded).

The extractor is a synthnet with the default architecture (width 16, 64 px) and random weights: speed
does not depend on the weights (with random weights IS is ~1). Sizes: ``BENCH_METRICS_IMAGES`` generated
and real images (default 1024, so that a run lasts seconds), ``BENCH_METRICS_SIZE`` px (default 64),
``BENCH_METRICS_INCEPTION_IMAGES`` (default 64); after one untimed warm-up call each, the two paths
alternate and the best of ``BENCH_METRICS_REPEAT`` (default 3) runs counts.

    python -m benchmarks.bench_metrics
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.common import print_table, row, timed

NUM_IMAGES = int(os.environ.get("BENCH_METRICS_IMAGES", 1024))
SIZE = int(os.environ.get("BENCH_METRICS_SIZE", 64))
INCEPTION_IMAGES = int(os.environ.get("BENCH_METRICS_INCEPTION_IMAGES", 64))
REPEAT = int(os.environ.get("BENCH_METRICS_REPEAT", 3))
BATCH = 64
IS_SPLITS = 4
SEED = 0


def _images(n: int, size: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 255, (n, 1, 1, 3))
    grad = rng.uniform(-120, 120, (n, 2, 1, 1, 3))
    img = base + xs[None, ..., None] * grad[:, 0] + ys[None, ..., None] * grad[:, 1]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _fid_is_rows(extractor, label: str, gen_paths, real_npy: Path, n: int, tmp: Path) -> list[dict]:
    import numpy as np
    import torch_fidelity

    from retrievegan.eval import fidelity
    from retrievegan.eval.image_datasets import ArrayDataset, PngDataset

    real = np.load(real_npy)
    stats_s, _ = timed(
        lambda: fidelity.compute_reference(real_npy, "test", extractor, BATCH, "cpu", tmp / f"ref_{label}.npz"), REPEAT
    )
    reference = fidelity.load_reference(tmp / f"ref_{label}.npz")
    gen = PngDataset(gen_paths, (SIZE, SIZE))

    def ours():
        feats = fidelity.extract_features(gen, extractor, BATCH, "cpu")
        fid = fidelity.fid_from_statistics(fidelity.fid_statistics(feats[extractor.fid_layer]), reference.stats)
        return fid, fidelity.inception_score(feats[extractor.isc_layer], IS_SPLITS, SEED)

    def baseline():
        out = torch_fidelity.calculate_metrics(
            input1=gen,
            input2=ArrayDataset(real),
            fid=True,
            isc=True,
            cuda=False,
            cache=False,
            feature_extractor=extractor.fidelity_name,
            feature_extractor_weights_path=str(extractor.weights),
            isc_splits=IS_SPLITS,
            rng_seed=SEED,
            batch_size=BATCH,
            save_cpu_ram=True,
            verbose=False,
        )
        return out["frechet_inception_distance"], (out["inception_score_mean"], out["inception_score_std"])

    ours(), baseline()  # warm-up: thread pools, allocator, page cache
    ours_s = base_s = float("inf")
    for _ in range(REPEAT):  # alternate, so that load changes on a shared machine hit both alike
        t, (fid, (is_mean, _)) = timed(ours, 1)
        ours_s = min(ours_s, t)
        t, (fid_ref, (is_ref, _)) = timed(baseline, 1)
        base_s = min(base_s, t)
    if abs(fid - fid_ref) > 1e-4 * max(1.0, abs(fid_ref)) or abs(is_mean - is_ref) > 1e-5 * is_ref:
        raise AssertionError(
            f"{label}: stored-statistics path differs from calculate_metrics "
            f"(FID {fid} vs {fid_ref}, IS {is_mean} vs {is_ref})"
        )
    note = (
        f"{n} generated PNGs + {n} real images, {SIZE} px, batch {BATCH}, {IS_SPLITS} IS splits; "
        f"same FID/IS as reference: yes (FID {fid:.4g}, IS {is_mean:.4g})"
    )
    return [
        row(
            f"fid+is ({label})",
            "images/s, stored real statistics",
            n / ours_s,
            "images/s",
            reference=n / base_s,
            note="reference: torch-fidelity calculate_metrics re-extracting the real features (cache=False); " + note,
        ),
        row(
            f"real statistics ({label})",
            "s, once per split (retrievegan real-stats)",
            stats_s,
            "s",
            better="lower",
            note=f"{n} real images",
        ),
    ]


def run() -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    from retrievegan.eval import diversity, fidelity
    from retrievegan.eval.image_datasets import PairDataset, PngDataset
    from retrievegan.eval.synthnet import SynthNet, save_synthnet
    from retrievegan.weights import MissingWeightsError

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        tmp = Path(tmp)
        model = SynthNet.initialised(
            torch.Generator().manual_seed(0), num_themes=8, num_categories=11, width=16, image_size=SIZE
        )
        save_synthnet(tmp / "synthnet.pt", model)
        real_npy = tmp / "test_images.npy"
        np.save(real_npy, _images(NUM_IMAGES, SIZE, 1))
        gen_paths, gen1_paths = [], []
        for k, image in enumerate(_images(NUM_IMAGES, SIZE, 2)):
            gen_paths.append(tmp / "sample0" / f"{k:012d}.png")
            gen_paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(gen_paths[-1])
        for k, image in enumerate(_images(NUM_IMAGES, SIZE, 3)):
            gen1_paths.append(tmp / "sample1" / f"{k:012d}.png")
            gen1_paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(gen1_paths[-1])

        synthnet = fidelity.resolve_extractor("synthnet", tmp / "synthnet.pt")
        rows += _fid_is_rows(synthnet, "synthnet", gen_paths, real_npy, NUM_IMAGES, tmp)

        pairs = PairDataset(PngDataset(gen_paths, (SIZE, SIZE)), PngDataset(gen1_paths, (SIZE, SIZE)))
        ds_model = diversity.resolve_backbone("synthnet", synthnet_weights=tmp / "synthnet.pt").build()
        ds_s, _ = timed(lambda: diversity.pair_distances(pairs, ds_model, BATCH), REPEAT)
        rows.append(
            row(
                "ds (lpips_synthnet)",
                "pairs/s",
                NUM_IMAGES / ds_s,
                "pairs/s",
                note=f"{NUM_IMAGES} PNG pairs, {SIZE} px, batch {BATCH}",
            )
        )

        try:
            inception = fidelity.resolve_extractor("inception")
        except MissingWeightsError as exc:
            print(f"inception-v3-compat skipped: {exc}")
        else:
            n = INCEPTION_IMAGES
            real_small = tmp / "test_images_small.npy"
            np.save(real_small, np.load(real_npy)[:n])
            rows += _fid_is_rows(inception, "inception", gen_paths[:n], real_small, n, tmp)
    return rows


if __name__ == "__main__":
    print_table(run())
