"""Shared helpers of the embedding stages: the patch bank and per-image keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.data.patches import load_patch_table
from retrievegan.errors import InputError


def load_bank(patches_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """``(P, C, C, 3)`` uint8 memmap and the patch table of ``patches_dir``, checked against each other."""
    patches_dir = Path(patches_dir)
    table = load_patch_table(patches_dir / "patches.csv")
    check_patch_ids(table, patches_dir / "patches.csv")
    path = patches_dir / "patches.npy"
    bank = io.load_array(path, "patch bank not found (run `retrievegan patches`)")
    if bank.ndim != 4 or bank.shape[3] != 3 or bank.dtype != np.uint8:
        raise InputError(path, f"expected a (P, C, C, 3) uint8 array, got {bank.shape} {bank.dtype}")
    if len(bank) != len(table):
        raise InputError(path, f"{len(bank)} patches but patches.csv has {len(table)} rows")
    return bank, table


def check_patch_ids(table: pd.DataFrame, path: str | Path) -> None:
    """Row ``i`` of the table must be ``patch_id == i`` (the row of every aligned array)."""
    ids = table["patch_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(table))):
        bad = int(np.flatnonzero(ids != np.arange(len(table)))[0])
        raise InputError(path, f"patch_id must be 0..P-1 in row order; row {bad} has {ids[bad]}", f"row {bad}")


def image_keys(table: pd.DataFrame) -> np.ndarray:
    """``(P,)`` int64: one id per source image, i.e. per (split, image_index) of the patch rows."""
    return pd.MultiIndex.from_arrays([table["split"], table["image_index"]]).factorize()[0].astype(np.int64)
