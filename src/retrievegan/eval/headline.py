"""README headline figures from the stored reference run (`retrievegan headline`).

The reference run's metric files are stored in git under ``reference-run/<output path>`` (the place
``make dvc-commit`` / ``retrievegan verify`` use; ``--record RESULTS_DIR`` stores the files the headline reads, with
``headline_provenance.json``: the commits and the date of the run that produced them, from its job logs, and
each file's sha256). ``--write`` renders the README block between :data:`BEGIN` and :data:`END` from them;
``--check`` (and ``tests/eval/test_claims.py``) fails when the README and the stored files disagree, so no headline
number is typed by hand.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from retrievegan import io, runinfo
from retrievegan.errors import InputError

BEGIN = "<!-- headline:begin (written by `retrievegan headline --write` from reference-run/; do not edit) -->"
END = "<!-- headline:end -->"
PROVENANCE = "headline_provenance.json"
SETTING = "pred_bbox"
FILES = (
    "metrics/compatibility/retrievegan_pred_bbox.json",
    "metrics/compatibility/pastegan_pred_bbox.json",
    "metrics/compatibility/retrievegan_gt_only_pred_bbox.json",
    "metrics/compatibility/retrievegan_occur_only_pred_bbox.json",
    "metrics/compatibility/retrievegan_no_gt_no_occur_pred_bbox.json",
    "metrics/retrievegan_pred_bbox.json",
    "metrics/retrievegan_gt_bbox.json",
    "metrics/pastegan_pred_bbox.json",
    "metrics/attngan_pred_bbox.json",
    "metrics/sg2im_pred_bbox.json",
    "metrics/layout2im_gt_bbox.json",
    "metrics/real_data.json",
    "metrics/cooccur_recall.json",
    "metrics/sg2im_box_l1.json",
    "userstudy/preference_simulated.csv",
)
OPTIONAL = (
    "claims.csv",
    "claims_full.csv",
    "claims_c1.csv",
)  # stored when the reference run includes the opt-in claims


def record_reference(results_dir: str | os.PathLike[str], reference_dir: str | os.PathLike[str]) -> list[str]:
    """Copy the headline's input files of a finished run to ``reference_dir`` (same relative paths) and write its
    provenance: the distinct ``git_sha`` and the latest date of the ``[provenance]`` lines of the run's job logs
    (``logs/*.log``, :func:`retrievegan.runinfo.read_provenance`)."""
    results, reference = Path(results_dir), Path(reference_dir)
    stored = []
    for rel in FILES + OPTIONAL:
        src = results / rel
        if not src.is_file():
            if rel in OPTIONAL:
                continue
            raise InputError(src, "missing: the headline needs it (finish the run first)")
        dst = reference / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        stored.append(rel)
    commits, date = runinfo.logged_provenance(results / "logs")  # run.json holds no commit / time: the logs do
    io.write_json(
        reference / PROVENANCE,
        {"commits": commits, "date": date, "files": {rel: io.sha256_file(reference / rel) for rel in stored}},
    )
    return stored


def _load(reference: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    prov_path = reference / PROVENANCE
    if not prov_path.is_file():
        raise InputError(prov_path, "missing: store the reference run with `retrievegan headline --record`")
    prov = json.loads(prov_path.read_text(encoding="utf-8"))
    data = {}
    for rel, sha in prov["files"].items():
        path = reference / rel
        if not path.is_file() or io.sha256_file(path) != sha:
            raise InputError(
                path,
                "differs from the file recorded in headline_provenance.json (re-record the "
                "reference run: `retrievegan headline --record <results dir>`)",
            )
        data[rel] = pd.read_csv(path) if rel.endswith(".csv") else json.loads(path.read_text(encoding="utf-8"))
    return prov, data


def _ci(m: dict[str, Any], key: str) -> str:
    return f"{m[key]:.3f} [{m[key + '_low']:.3f}, {m[key + '_high']:.3f}]"


def _fid(rec: dict[str, Any], tag: str) -> str:
    value = [v for k, v in rec["metrics"].items() if k.startswith("fid_") and k.endswith(f"_{tag}")][0]
    return f"{value:.1f}"


def render(reference_dir: str | os.PathLike[str]) -> str:
    """The README's headline block (between the markers) from the stored reference run."""
    prov, d = _load(Path(reference_dir))
    compat = {
        name: d[f"metrics/compatibility/{name}_{SETTING}.json"]
        for name in (
            "retrievegan",
            "pastegan",
            "retrievegan_gt_only",
            "retrievegan_occur_only",
            "retrievegan_no_gt_no_occur",
        )
    }
    full = compat["retrievegan"]
    m = full["metrics"]
    fids = {
        name: d[f"metrics/{name}.json"]
        for name in (
            "retrievegan_pred_bbox",
            "retrievegan_gt_bbox",
            "pastegan_pred_bbox",
            "attngan_pred_bbox",
            "sg2im_pred_bbox",
            "layout2im_gt_bbox",
        )
    }
    extractor = fids["retrievegan_pred_bbox"]["extractor"]
    cooc, box, study = (
        d["metrics/cooccur_recall.json"],
        d["metrics/sg2im_box_l1.json"],
        d["userstudy/preference_simulated.csv"],
    )
    pair = study[(study["measure"] == "preference") & (study["other"] == "pastegan")].iloc[0]
    commits = ", ".join(c[:12] for c in prov["commits"])
    rows = [
        (
            "Compatibility (share of retrieved patch sets from one hidden theme, "
            f"{full['num_sets']} sets, {full['bootstrap']['confidence']:.0%} bootstrap)",
            f"RetrieveGAN {_ci(m, 'compat_single_theme')}; random choice among the same "
            f"{full['random_candidates']['k']} candidates {_ci(m, 'compat_random_candidates_single_theme')}; PasteGAN "
            f"{_ci(compat['pastegan']['metrics'], 'compat_single_theme')}",
        ),
        (
            "Table 2 on the same score",
            f"L_gt_sel only {compat['retrievegan_gt_only']['metrics']['compat_single_theme']:.3f}"
            f"; L_occur_sel only {compat['retrievegan_occur_only']['metrics']['compat_single_theme']:.3f}; neither "
            f"{compat['retrievegan_no_gt_no_occur']['metrics']['compat_single_theme']:.3f}",
        ),
        (
            f"FID ({extractor} features, test split; not comparable to the paper)",
            f"RetrieveGAN {_fid(fids['retrievegan_pred_bbox'], 'pred')} (pred) / {_fid(fids['retrievegan_gt_bbox'], 'gt')} "
            f"(GT), PasteGAN {_fid(fids['pastegan_pred_bbox'], 'pred')}, AttnGAN {_fid(fids['attngan_pred_bbox'], 'pred')}, "
            f"sg2im {_fid(fids['sg2im_pred_bbox'], 'pred')}, layout2im (GT) {_fid(fids['layout2im_gt_bbox'], 'gt')}; real "
            f"{d['metrics/real_data.json']['fid_reference_split']} vs {d['metrics/real_data.json']['split']} "
            f"{_fid(d['metrics/real_data.json'], 'real')}",
        ),
        (
            f"Co-occurrence embedding, same-image recall@5 on {cooc['split']}",
            f"{cooc['trained']['recall@5']:.3f} (untrained network {cooc['untrained']['recall@5']:.3f}, chance "
            f"{cooc['chance']['recall@5']:.3f})",
        ),
        (
            f"sg2im box L1 on {box['split']}",
            f"{box['box_l1']:.3f} (predict the mean box "
            f"{box['baselines']['mean_box']['l1']:.3f}; per-category mean box {box['baselines']['category_mean_box']['l1']:.3f})",
        ),
        (
            f"Simulated user study ({int(pair['n_participants'])} simulated participants kept, **not people**)",
            f"RetrieveGAN preferred over PasteGAN in {pair['share']:.1%} [{pair['wilson_low']:.1%}, "
            f"{pair['wilson_high']:.1%}] of trials (simulated truth {pair['true_share_simulated']:.1%})",
        ),
    ]
    for rel, label in (
        ("claims.csv", "Claims, default run (`claims.csv`)"),
        ("claims_full.csv", "Claims, full version (`claims_full.csv`)"),
        ("claims_c1.csv", "C1 with a composite discriminator that can see compatibility (`claims_c1.csv`)"),
    ):
        if rel in d:
            table = d[rel]
            seeds = sorted({int(s) for s in table["paired_seeds"].dropna() if str(s).strip()} or {0})
            rows.append(
                (
                    f"{label}: verdicts (paired training seeds up to {max(seeds)})",
                    "; ".join(f"{r['claim']} {r['verdict']}" for r in table.to_dict("records")),
                )
            )
            if rel != "claims.csv" and "answer" in table:  # C1's answer in one sentence, as claims.md states it
                rows += [
                    (f"{r['claim']}, in one sentence (`{rel}`)", str(r["answer"]))
                    for r in table.to_dict("records")
                    if str(r["claim"]).startswith("C1")
                ]
    lines = [
        BEGIN,
        f"Headline figures of the reference run (code commit(s) {commits}, run on {prov['date']}; "
        "embedded default; all in `REPORT.md`):",
        "",
        "| | figure |",
        "|---|---|",
    ]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines + [END])


def _split(text: str, path: str | os.PathLike[str]) -> tuple[str, str, str]:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise InputError(path, f"needs exactly one headline block between the markers {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN)
    block, tail = rest.split(END)
    return head, BEGIN + block + END, tail


def readme_matches(readme: str | os.PathLike[str], block: str) -> bool:
    return _split(Path(readme).read_text(encoding="utf-8"), readme)[1] == block


def write_readme(readme: str | os.PathLike[str], block: str) -> None:
    head, _, tail = _split(Path(readme).read_text(encoding="utf-8"), readme)
    io.write_text(readme, head + block + tail)
