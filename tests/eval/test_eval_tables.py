"""Tables and report: paper values beside ours, n/a with reasons, one column per feature network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from retrievegan.eval.tables import ReportConfig, load_results, write_tables
from retrievegan.runs import METHOD_NAMES, SETTINGS, evaluation_runs, metric_name

REPO = Path(__file__).resolve().parents[2]
PAPER = dict(
    paper_tables=str(REPO / "config/reference/paper_tables.csv"),
    paper_dataset_stats=str(REPO / "config/reference/dataset_stats.csv"),
)


def metric_record(method, setting, fid, is_mean, ds, network="synthnet", ds_network="lpips_synthnet"):
    names = {f: metric_name(f, n, "test", setting) for f, n in (("fid", network), ("is", network), ("ds", ds_network))}
    return {
        "method": method,
        "setting": setting,
        "split": "test",
        "num_images": 256,
        "seed": 0,
        "checkpoint_sha256": "cd" * 32,
        "extractor": network,
        "ds_network": ds_network,
        "metrics": {
            names["fid"]: fid,
            names["is"]: is_mean,
            names["is"] + "_std": 0.25,
            names["ds"]: ds,
            names["ds"] + "_std": 0.05,
        },
    }


def real_record(network="synthnet"):
    fid, is_ = metric_name("fid", network, "test", "real"), metric_name("is", network, "test", "real")
    return {
        "method": "real_data",
        "split": "test",
        "num_images": 256,
        "seed": 0,
        "extractor": network,
        "metrics": {fid: 3.5, is_: 7.9, is_ + "_std": 0.1},
    }


def write_inputs(tmp_path, network="synthnet", ds_network="lpips_synthnet", methods=METHOD_NAMES, skip=()):
    files = []
    for k, (method, setting) in enumerate(evaluation_runs(methods, SETTINGS)):
        if (method, setting) in skip:
            continue
        path = tmp_path / "metrics" / f"{method}_{setting}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metric_record(method, setting, 40.0 + k, 9.0 + k / 10, 0.3, network, ds_network)))
        files.append(path)
    real = tmp_path / "metrics" / "real_data.json"
    real.write_text(json.dumps(real_record(network)))
    dataset_csv = tmp_path / "dataset_table.csv"
    dataset_csv.write_text(
        "dataset,source,train,val,test,categories,predicates,patches,image_size\n"
        "synth,coco_stuff,1436,128,256,11,6,8010,64\n"
    )
    return files, real, dataset_csv


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def row(rows, method_label, setting=None):
    return next(r for r in rows if r["Method"] == method_label and (setting is None or r["Setting"] == setting))


def test_table1_has_paper_values_beside_ours_and_reasons_for_every_na(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path)
    results = load_results("synth", files, real, [], METHOD_NAMES, SETTINGS)
    write_tables(results, ReportConfig(**PAPER), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table1.csv")
    rg = row(rows, "RetrieveGAN", "pred_bbox")
    assert float(rg["FID paper"]) == 43.2 and float(rg["IS paper"]) == 10.6 and float(rg["IS paper std"]) == 0.6
    ours_fid = float(rg["FID ours (synthnet)"])
    assert (
        ours_fid
        == json.loads((tmp_path / "metrics/retrievegan_pred_bbox.json").read_text())["metrics"][
            "fid_synthnet_test_pred"
        ]
    )
    assert rg["FID diff (synthnet)"].startswith("n/a: different data")
    layout_pred = row(rows, "layout2im", "pred_bbox")
    assert layout_pred["FID ours (synthnet)"].startswith("n/a: not applicable: layout2im takes ground-truth boxes")
    attn_gt = row(rows, "AttnGAN (GT)", "gt_bbox")
    assert "AttnGAN generates from text" in attn_gt["DS ours (lpips_synthnet)"]
    assert attn_gt["FID paper"].startswith("n/a: ")
    real_row = row(rows, "Real data")
    assert float(real_row["FID paper"]) == 6.8 and float(real_row["FID ours (synthnet)"]) == 3.5
    assert real_row["DS ours (lpips_synthnet)"] == "n/a: DS is not defined for real data (one image per scene graph)"
    for r in rows:  # every cell: a number or n/a with a reason
        for key, value in r.items():
            if key in ("Method", "Setting") or key.endswith(" std"):
                continue
            if value.startswith("n/a"):
                assert value.startswith("n/a: ") and len(value) > 10, (key, value)
            else:
                float(value)
    md = (tmp_path / "tables" / "table1.md").read_text()
    assert "n/a [a]" in md and "- [a] n/a: " in md and "43.2" in md
    tex = (tmp_path / "tables" / "table1.tex").read_text()
    assert "\\begin{tabular}" in tex and "n/a$^{a}$" in tex and "$\\pm$" in tex


def test_table2_keeps_illegible_paper_values_visible(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path)
    results = load_results("synth", files, real, [], METHOD_NAMES, SETTINGS)
    write_tables(results, ReportConfig(**PAPER), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table2.csv")
    assert [r["Method"] for r in rows] == [
        "retrievegan_no_gt_no_occur",
        "retrievegan_gt_only",
        "retrievegan_occur_only",
        "retrievegan",
        "Real data",
    ]
    assert row(rows, "retrievegan_no_gt_no_occur")["FID paper"].startswith("n/a: value not legible")
    assert float(row(rows, "retrievegan_gt_only")["DS paper"]) == 0.36
    assert row(rows, "retrievegan_gt_only")["FID paper"].startswith("n/a: value not legible")
    full = row(rows, "retrievegan")
    assert float(full["FID paper"]) == 43.2
    assert "Table 1 reports 0.34" in full["DS paper"]
    assert row(rows, "Real data")["DS paper"] == "n/a: DS is not defined for real data (one image per scene graph)"
    assert (row(rows, "retrievegan_occur_only")["L_gt_sel"], row(rows, "retrievegan_occur_only")["L_occur_sel"]) == (
        "-",
        "yes",
    )
    assert not row(rows, "retrievegan_gt_only")["FID ours (synthnet)"].startswith("n/a")


def test_differences_only_with_the_papers_data_and_networks(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path, network="inception", ds_network="lpips_alex")
    results = load_results("coco_stuff", files, real, [], METHOD_NAMES, SETTINGS)
    write_tables(results, ReportConfig(**PAPER, same_data_as_paper=True), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table1.csv")
    rg = row(rows, "RetrieveGAN (GT)", "gt_bbox")
    assert float(rg["FID diff (inception)"]) == pytest.approx(float(rg["FID ours (inception)"]) - 42.7)
    assert float(rg["DS diff (lpips_alex)"]) == pytest.approx(float(rg["DS ours (lpips_alex)"]) - 0.21)
    sg = row(rows, "sg2im", "pred_bbox")
    assert sg["FID diff (inception)"] != "" and not sg["FID diff (inception)"].startswith("n/a")
    ds_rows = read_csv(tmp_path / "tables" / "dataset.csv")
    assert float(ds_rows[0]["Train paper"]) == 74121 and float(ds_rows[0]["Train ours"]) == 1436
    assert float(ds_rows[0]["Train diff"]) == 1436 - 74121


def test_networks_never_share_a_column(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path, skip={("sg2im", "pred_bbox")})
    other = tmp_path / "metrics" / "sg2im_pred_bbox.json"
    other.write_text(json.dumps(metric_record("sg2im", "pred_bbox", 80.0, 5.0, 0.1, "inception", "lpips_alex")))
    results = load_results("synth", files + [other], real, [], METHOD_NAMES, SETTINGS)
    write_tables(results, ReportConfig(**PAPER), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table1.csv")
    sg = row(rows, "sg2im", "pred_bbox")
    assert float(sg["FID ours (inception)"]) == 80.0
    assert sg["FID ours (synthnet)"] == "n/a: computed with inception (see that column)"
    rg = row(rows, "RetrieveGAN", "pred_bbox")
    assert rg["FID ours (inception)"] == "n/a: computed with synthnet (see that column)"


def test_methods_not_evaluated_are_marked(tmp_path):
    methods = ("sg2im", "retrievegan")
    files, real, dataset_csv = write_inputs(tmp_path, methods=methods)
    results = load_results("synth", files, real, [], methods, SETTINGS)
    write_tables(results, ReportConfig(**PAPER), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table1.csv")
    assert row(rows, "PasteGAN", "pred_bbox")["IS ours (synthnet)"].startswith("n/a: not evaluated in this run")


def test_compatibility_table_and_report(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path)
    compat = tmp_path / "metrics" / "compatibility" / "retrievegan_pred_bbox.json"
    compat.parent.mkdir()
    compat.write_text(
        json.dumps(
            {
                "method": "retrievegan",
                "setting": "pred_bbox",
                "num_sets": 512,
                "seed": 0,
                "bootstrap": {"samples": 100, "confidence": 0.95},
                "metrics": {
                    "compat_single_theme": 0.5,
                    "compat_single_theme_low": 0.45,
                    "compat_single_theme_high": 0.55,
                    "compat_pairwise_same_theme": 0.7,
                    "compat_pairwise_same_theme_low": 0.66,
                    "compat_pairwise_same_theme_high": 0.74,
                    "compat_chance_pairwise_same_theme": 0.13,
                },
            }
        )
    )
    results = load_results("synth", files, real, [compat], METHOD_NAMES, SETTINGS, compatibility_enabled=True)
    cfg = ReportConfig(**PAPER)
    tables = write_tables(results, cfg, dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "compatibility.csv")
    rg = row(rows, "RetrieveGAN", "pred_bbox")
    assert float(rg["Pairwise same-theme"]) == 0.7 and float(rg["Chance (random same-category)"]) == 0.13
    assert row(rows, "sg2im", "pred_bbox")["Single-theme share"] == "n/a: sg2im does not retrieve patches"
    assert row(rows, "PasteGAN", "gt_bbox")["Sets"].startswith("n/a: no compatibility file")

    from retrievegan.eval.metrics import EvaluationConfig
    from retrievegan.eval.report import write_report

    figure = tmp_path / "figures" / "compatibility.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    out = write_report(
        tmp_path / "REPORT.md",
        results,
        cfg,
        EvaluationConfig(feature_extractor="synthnet", ds_backbone="synthnet"),
        tables,
        [figure],
        files + [real, compat],
        None,
        64,
    )
    text = out.read_text()
    assert "no number in these tables is directly comparable" in text
    assert "**FID**: computed with synthnet; **not comparable**" in text
    assert "**DS**: computed with lpips_synthnet; **not comparable**" in text
    assert "(tables/table1.md)" in text and "![compatibility](figures/compatibility.png)" in text
    assert "Table 2** of the paper is only partly legible" in text
    assert "[retrievegan_pred_bbox.json](metrics/retrievegan_pred_bbox.json)" in text


def compat_record(method, setting, single, low, high):
    return {
        "method": method,
        "setting": setting,
        "num_sets": 512,
        "seed": 0,
        "bootstrap": {"samples": 100, "confidence": 0.95},
        "metrics": {
            "compat_single_theme": single,
            "compat_single_theme_low": low,
            "compat_single_theme_high": high,
            "compat_pairwise_same_theme": 0.7,
            "compat_pairwise_same_theme_low": 0.66,
            "compat_pairwise_same_theme_high": 0.74,
            "compat_chance_pairwise_same_theme": 0.13,
        },
    }


def test_table2_has_the_variant_rows_with_their_factors_and_compatibility(tmp_path):
    """Issue 11: Table 2 grows rows for the retrieval modes and the L_occur form (variants, evaluated in the
    ablation setting), each with FID / IS / DS and the compatibility score with its 95 % interval; the PasteGAN
    rows of Table 1 say what they are; REPORT.md states every changed default and the group masses."""
    from retrievegan.eval.metrics import EvaluationConfig
    from retrievegan.eval.report import DEFAULT_CHANGES, write_report
    from retrievegan.runs import factor_levels

    variants = ("retrievegan_soft", "retrievegan_relaxed", "retrievegan_occur_mean")
    files, real, dataset_csv = write_inputs(tmp_path)
    compat_files = []
    for k, method in enumerate(("retrievegan", "retrievegan_gt_only") + variants):
        if method in variants:
            path = tmp_path / "metrics" / f"{method}_pred_bbox.json"
            path.write_text(json.dumps(metric_record(method, "pred_bbox", 60.0 + k, 3.0, 0.2)))
            files.append(path)
        cpath = tmp_path / "metrics" / "compatibility" / f"{method}_pred_bbox.json"
        cpath.parent.mkdir(exist_ok=True)
        cpath.write_text(json.dumps(compat_record(method, "pred_bbox", 0.5 + k / 100, 0.4, 0.6)))
        compat_files.append(cpath)
    config = {
        "retrieval": {"mode": "hard"},
        "retrievegan": {"occur_form": "sum"},
        "features": {"pooling": "multiscale"},
    }
    values = {
        "pastegan.test_pick": "random",
        "pastegan.test_top": 10,
        "retrieval.mode": "hard",
        "retrievegan.occur_form": "sum",
        "features.pooling": "multiscale",
        "features.backbone": "category_cnn",
    }
    results = load_results(
        "synth",
        files,
        real,
        compat_files,
        METHOD_NAMES,
        SETTINGS,
        True,
        variants,
        "pred_bbox",
        factor_levels(config, list(METHOD_NAMES) + list(variants)),
        values,
    )
    cfg = ReportConfig(**PAPER)
    tables = write_tables(results, cfg, dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table2.csv")
    assert [r["Method"] for r in rows] == [
        "retrievegan_no_gt_no_occur",
        "retrievegan_gt_only",
        "retrievegan_occur_only",
        "retrievegan",
        *variants,
        "Real data",
    ]
    full, soft, relaxed, mean = (row(rows, m) for m in ("retrievegan",) + variants)
    assert (full["Retrieval"], soft["Retrieval"], relaxed["Retrieval"]) == ("hard", "soft", "relaxed")
    assert (full["L_occur form"], mean["L_occur form"], mean["Retrieval"]) == ("sum", "mean", "hard")
    header = "Compatibility (single theme, 95% CI)"
    assert float(full[header]) == 0.5 and float(full[header + " low"]) == 0.4 and float(full[header + " high"]) == 0.6
    assert float(relaxed[header]) == pytest.approx(0.5 + 3 / 100)
    assert float(soft["FID ours (synthnet)"]) == 62.0 and float(mean["DS ours (lpips_synthnet)"]) == 0.2
    assert soft["FID paper"].startswith("n/a: the paper has no such row")
    assert row(rows, "retrievegan_occur_only")[header].startswith("n/a: no compatibility file")
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "0.500 [0.400, 0.600]" in md and "retrievegan_relaxed: Retrieval = relaxed" in md
    # a variant is evaluated in the ablation setting only
    t1 = read_csv(tmp_path / "tables" / "table1.csv")
    assert float(row(t1, "PasteGAN", "pred_bbox")["FID ours (synthnet)"]) > 0
    t1_md = (tmp_path / "tables" / "table1.md").read_text()
    assert "PasteGAN retrieval (random selection) on the shared generation module" in t1_md
    assert row(rows, "retrievegan_gt_only")["L_occur form"] == "- (no L_occur_sel)"
    assert "first 10 pre-filtered candidates" in t1_md
    compat = read_csv(tmp_path / "tables" / "compatibility.csv")
    assert float(row(compat, "RetrieveGAN (soft retrieval)", "pred_bbox")["Single-theme share"]) == pytest.approx(0.52)
    group_mass = {
        "method": "retrievegan_relaxed",
        "trained_mode": "relaxed",
        "split": "test",
        "metrics": {
            "groups": 1000,
            "groups_over_one": 123,
            "share_groups_over_one": 0.123,
            "share_groups_over_1_1": 0.05,
            "share_groups_under_one": 0.2,
            "sets": 300,
            "share_sets_with_a_group_over_one": 0.4,
            "max_group_mass": 1.9,
        },
    }
    out = write_report(
        tmp_path / "REPORT.md",
        results,
        cfg,
        EvaluationConfig(feature_extractor="synthnet", ds_backbone="synthnet"),
        tables,
        [],
        files + [real] + compat_files,
        None,
        64,
        group_mass=[group_mass],
    )
    text = out.read_text()
    for change in DEFAULT_CHANGES:
        assert f"**`{change.key}`**" in text
    assert "§4.2" in text and "eq. 3" in text and "supplement §3" in text
    assert "This run: `random`" in text and "This run: `sum`" in text and "This run: `multiscale`" in text
    assert "`retrievegan_relaxed`: 123 of 1000 groups (12.3%) got more than one unit" in text
    assert "`retrievegan_occur_mean` (RetrieveGAN (L_occur_sel as a mean over pairs))" in text


def test_no_variants_no_extra_rows(tmp_path):
    files, real, dataset_csv = write_inputs(tmp_path)
    results = load_results("synth", files, real, [], METHOD_NAMES, SETTINGS)
    write_tables(results, ReportConfig(**PAPER), dataset_csv, tmp_path / "tables")
    rows = read_csv(tmp_path / "tables" / "table2.csv")
    assert len(rows) == 5 and rows[3]["Retrieval"] == "-"
    assert rows[3]["Compatibility (single theme)"].startswith("n/a: compatibility score not computed")
