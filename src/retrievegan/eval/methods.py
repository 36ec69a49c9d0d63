"""What evaluation knows about the methods: names, settings, which (method, setting) pairs exist,
which methods retrieve patches, and how metrics are named.

Pure Python (no torch): the Snakemake rule files import it to declare their inputs.

Metric names encode the metric, the network that produced the features, the split and the setting::

    fid_<extractor>_<split>_<pred|gt|real>      e.g. fid_synthnet_test_pred, fid_inception_test_gt
    is_<extractor>_<split>_<pred|gt|real>       (+ ``_std``: std over the IS splits)
    ds_lpips_<backbone>_<split>_<pred|gt>       (+ ``_std``: std over the test scene graphs)

so numbers from different extractors never share a name (nor a table column).
"""

from __future__ import annotations

import dataclasses

SETTINGS: tuple[str, ...] = ("pred_bbox", "gt_bbox")
SETTING_TAGS: dict[str, str] = {"pred_bbox": "pred", "gt_bbox": "gt"}
SETTING_LABELS: dict[str, str] = {"pred_bbox": "predicted boxes", "gt_bbox": "ground-truth boxes (GT)"}
REAL_TAG = "real"
PAPER_NETWORKS = frozenset({"inception", "lpips_alex"})  # the networks of the paper's FID / IS and DS


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str  # as printed in the paper's tables
    retrieves_patches: bool
    not_applicable: tuple[tuple[str, str], ...] = ()  # (setting, reason)
    ablation: tuple[bool, bool] | None = None  # (L_gt_sel, L_occur_sel) for Table 2 rows

    def applies_to(self, setting: str) -> bool:
        return all(s != setting for s, _ in self.not_applicable)

    def not_applicable_reason(self, setting: str) -> str | None:
        for s, reason in self.not_applicable:
            if s == setting:
                return reason
        return None


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("sg2im", "sg2im", False),
        MethodInfo("attngan", "AttnGAN", False, (
            ("gt_bbox", "AttnGAN generates from text (scene graph turned into sentences) and takes no boxes; "
                        "the paper has no AttnGAN (GT) row"),)),
        MethodInfo("layout2im", "layout2im", False, (
            ("pred_bbox", "layout2im takes ground-truth boxes as input and has no box predictor; "
                          "the paper lists it only with GT boxes"),)),
        MethodInfo("pastegan", "PasteGAN", True),
        MethodInfo("retrievegan", "RetrieveGAN", True, ablation=(True, True)),
        MethodInfo("retrievegan_no_gt_no_occur", "RetrieveGAN (no L_gt_sel, no L_occur_sel)", True,
                   ablation=(False, False)),
        MethodInfo("retrievegan_gt_only", "RetrieveGAN (L_gt_sel only)", True, ablation=(True, False)),
        MethodInfo("retrievegan_occur_only", "RetrieveGAN (L_occur_sel only)", True, ablation=(False, True)),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

# Paper layout: Table 1 rows per setting (methods the paper has a row for, plus the non-applicable
# ones so the table shows why they are empty); Table 2 rows (ablation of the two retrieval losses).
TABLE1_ROWS: dict[str, tuple[str, ...]] = {
    "pred_bbox": ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan"),
    "gt_bbox": ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan"),
}
TABLE2_ROWS: tuple[str, ...] = ("retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only",
                                "retrievegan")


def method_info(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {list(METHODS)}") from None


def evaluation_runs(methods, settings) -> list[tuple[str, str]]:
    """The (method, setting) pairs that exist: ``methods`` x ``settings`` minus the non-applicable ones."""
    for setting in settings:
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; known: {list(SETTINGS)}")
    return [(m, s) for m in methods for s in settings if method_info(m).applies_to(s)]


def retrieval_runs(methods, settings) -> list[tuple[str, str]]:
    """The evaluation runs whose sample folder has a ``retrievals.json``."""
    return [(m, s) for m, s in evaluation_runs(methods, settings) if METHODS[m].retrieves_patches]


def metric_name(family: str, network: str, split: str, setting: str) -> str:
    """``family`` in {fid, is, ds}; ``network``: the extractor (``synthnet``, ``inception``) or for DS
    ``lpips_<backbone>``; ``setting``: ``pred_bbox`` / ``gt_bbox`` / ``real``."""
    if family not in ("fid", "is", "ds"):
        raise ValueError(f"unknown metric family {family!r}")
    tag = REAL_TAG if setting == REAL_TAG else SETTING_TAGS[setting]
    return f"{family}_{network}_{split}_{tag}"
