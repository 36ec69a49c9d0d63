"""The embedding rules (workflow/rules/embed.smk) on the tiny benchmark: run, then nothing to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_workflow import snakemake, tiny_workdir

EMBED_OVERRIDES = {
    "features": {"channels": [8], "epochs": 1, "device": "cpu", "probe_max_queries": 20},
    "cooccur": {
        "channels": [8],
        "embed_dim": 8,
        "steps": 10,
        "images_per_batch": 4,
        "device": "cpu",
        "log_every": 5,
        "recall_k": [1, 3],
    },
    "prefilter": {"k": 4, "device": "cpu"},
}


@pytest.mark.slow
def test_embed_rules_run_then_nothing_to_do(tmp_path):
    work = tiny_workdir(tmp_path, **EMBED_OVERRIDES)
    res = work / "results/tiny"
    targets = ["results/tiny/features/patch_features.npy", "results/tiny/metrics/cooccur_recall.json"]
    snakemake(work, "--configfile", "tiny.yaml", "--cores", "2", *targets)
    table_rows = sum(1 for _ in open(res / "data/patches/patches.csv")) - 1
    assert np.load(res / "features/patch_features.npy").shape == (table_rows, 2 * (3 + 8))
    assert np.load(res / "features/cooccur_embeddings.npy").shape == (table_rows, 8)
    metrics = json.loads((res / "metrics/cooccur_recall.json").read_text())
    assert set(metrics) >= {"trained", "untrained", "chance"}
    for path in ("models/category_cnn/run.json", "models/cooccur/run.json", "features/patch_features.run.json"):
        assert (res / path).is_file()
    # the pre-filter on stand-in GCN features (the sg2im rules are not run here)
    np.save(res / "features/gcn_features.npy", np.random.default_rng(0).normal(size=(table_rows, 6)).astype(np.float32))
    snakemake(
        work,
        "--configfile",
        "tiny.yaml",
        "--allowed-rules",
        "prefilter",
        "--cores",
        "1",
        "results/tiny/features/prefilter/candidates.npy",
    )
    assert np.load(res / "features/prefilter/candidates.npy").shape == (table_rows, 4)
    again = snakemake(work, "--configfile", "tiny.yaml", "--cores", "2", "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr
