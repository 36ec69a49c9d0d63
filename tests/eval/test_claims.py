"""The paper's claims (retrievegan.eval.claims): the verdict rule, the claims table from metric files, the claim
arms' runs per seed, the README headline block from the stored reference run, and the pieces the claims' arms need
(E_p frozen, the E_p gradient trace in losses.jsonl, non-iterative retrieval, compatibility over snapshots)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from retrievegan import runs as m
from retrievegan.errors import InputError
from retrievegan.eval import claims as cl
from retrievegan.eval import headline

ROOT = Path(__file__).resolve().parents[2]


def test_the_verdict_rule_reads_the_corrected_test_of_the_paired_difference_and_the_declared_minimum():
    mean, low, high = cl.t_interval([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0 and math.isclose(high - mean, 4.302653 * 1.0 / math.sqrt(3), rel_tol=1e-5)
    m2, lo2, hi2, p = cl.paired_interval([1.0, 2.0, 3.0], [], 0.95)
    assert (m2, lo2, hi2) == pytest.approx((mean, low, high)) and math.isclose(p, 0.0742, abs_tol=1e-3)
    _, lo3, hi3, p3 = cl.paired_interval([1.0, 2.0, 3.0], [0.5, 0.5, math.nan], 0.95)  # + the within-seed error
    assert lo3 < low and hi3 > high and p3 > p
    # (difference, Holm p, seeds, min seeds, higher is better, minimum effect, alpha)
    assert cl.verdict(0.2, 0.01, 3, 3, True, 0.05, 0.05)[0] == "supported"
    assert cl.verdict(0.2, 0.01, 3, 3, False, 0.05, 0.05)[0] == "contradicted"
    assert cl.verdict(-0.2, 0.01, 3, 3, False, 0.05, 0.05)[0] == "supported"
    assert cl.verdict(0.2, 0.2, 5, 3, True, 0.05, 0.05)[0] == "inconclusive"
    v, why = cl.verdict(0.02, 0.001, 5, 3, True, 0.05, 0.05)  # significant but below the declared minimum effect
    assert v == "inconclusive" and "below the declared minimum effect 0.05" in why
    assert cl.verdict(-0.02, 0.001, 5, 3, True, 0.05, 0.05)[0] == "contradicted"  # the minimum is for support only
    v, why = cl.verdict(0.2, 0.001, 2, 3, True, 0.05, 0.05)  # significant, but too few seeds
    assert v == "inconclusive" and "2 paired training seeds" in why
    assert cl.combine(["supported", "supported"]) == "supported"
    assert cl.combine(["supported", "inconclusive"]) == "inconclusive"
    assert cl.combine(["supported", "contradicted"]) == "contradicted"
    assert math.isnan(cl.t_interval([1.0], 0.95)[1])


def test_holm_adjusts_the_family_step_down_and_leaves_nan_out():
    adjusted = cl.holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and math.isnan(adjusted[2])  # monotone: max(0.04 * 1, 0.06)


def _write_run(root: Path, run: str, seed: int, compat: float, fid: float, ds: float, settings=("pred_bbox",)) -> None:
    (root / "models" / run).mkdir(parents=True, exist_ok=True)
    (root / "models" / run / "run.json").write_text(json.dumps({"seed": seed}))
    for setting in settings:
        tag = {"pred_bbox": "pred", "gt_bbox": "gt"}[setting]
        (root / "metrics" / "compatibility").mkdir(parents=True, exist_ok=True)
        (root / "metrics" / f"{run}_{setting}.json").write_text(
            json.dumps(
                {
                    "method": run,
                    "setting": setting,
                    "num_images": 100,
                    "metrics": {
                        f"fid_synthnet_test_{tag}": fid,
                        f"ds_lpips_synthnet_test_{tag}": ds,
                        f"ds_lpips_synthnet_test_{tag}_std": 0.1,
                    },
                }
            )
        )
        (root / "metrics" / "compatibility" / f"{run}_{setting}.json").write_text(
            json.dumps(
                {
                    "method": run,
                    "setting": setting,
                    "metrics": {
                        "compat_pairwise_same_theme": compat,
                        "compat_pairwise_same_theme_low": compat - 0.01,
                        "compat_pairwise_same_theme_high": compat + 0.01,
                        "compat_single_theme": compat / 2,
                        "compat_single_theme_low": compat / 2 - 0.01,
                        "compat_single_theme_high": compat / 2 + 0.01,
                    },
                }
            )
        )


# per arm: compatibility, FID by seed (C1: trained > frozen and > PasteGAN; C4: iterative *worse*)
VALUES = {
    "retrievegan_no_gt_no_occur": ([0.30, 0.32, 0.31], [100, 101, 99]),
    "retrievegan_ep_frozen": ([0.20, 0.21, 0.19], [100, 102, 98]),
    "pastegan": ([0.13, 0.13, 0.13], [300, 280, 320]),
    "retrievegan": ([0.60, 0.70, 0.65], [150, 120, 180]),
    "retrievegan_occur_only": ([0.30, 0.40, 0.35], [160, 100, 200]),
    "retrievegan_gt_only": ([0.62, 0.66, 0.61], [60, 70, 65]),
    "retrievegan_non_iterative": ([0.80, 0.85, 0.82], [150, 125, 170]),
}


def _write_controls(root: Path, run: str, learned: float, best: float, identity: float, se: float = 0.005) -> Path:
    """A C1 controls file: the learned arm and the fixed arms on test (identity is the best fixed arm when it is)."""

    def test(v: float) -> dict:
        return {
            "test": {
                "compat_pairwise_same_theme": v,
                "compat_pairwise_same_theme_low": v - 0.01,
                "compat_pairwise_same_theme_high": v + 0.01,
            }
        }

    arms = {
        "learned": test(learned),
        "identity": test(identity),
        "ep_init": test(best if identity != best else 0.14),
        "learned_tuned": test(learned + 0.05),
        "random_candidates": test(0.13),
        "pastegan": test(0.13),
    }
    for arm in ("identity", "ep_init", "learned_tuned"):
        arms[arm]["chosen"] = {"label": "x10", "compat_pairwise_same_theme": 0.3}
        arms[arm]["search"] = [{"compat_pairwise_same_theme": 0.2}, {"compat_pairwise_same_theme": 0.3}]
    arms["learned"]["chosen"] = {"label": "as trained", "compat_pairwise_same_theme": learned}
    path = root / "metrics" / "c1_controls" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def paired(d: float) -> dict:
        return {"difference": d, "low": d - 2 * se, "high": d + 2 * se, "se": se, "scene_graphs": 256}

    path.write_text(
        json.dumps(
            {
                "method": run,
                "search_split": "val",
                "test_split": "test",
                "k": 32,
                "controls": {"grid": ["x1", "x10", "no noise"]},
                "arms": arms,
                "best_fixed": "identity" if identity == best else "ep_init",
                "paired": {"best_fixed": paired(learned - best), "pastegan": paired(learned - 0.13)},
            }
        )
    )
    return path


def _write_probe(root: Path, run: str, auc: float, half: float = 0.05) -> Path:
    path = root / "metrics" / "d_probe" / f"{run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    sees = auc - half > 0.5 or auc + half < 0.5
    d = {"auc": auc, "auc_low": auc - half, "auc_high": auc + half, "sees_compatibility": sees}
    path.write_text(
        json.dumps(
            {
                "method": run,
                "split": "val",
                "with_a_pair": 100,
                "probe": {"k": 32},
                "discriminators": {
                    "d_img": d,
                    "d_obj": {**d, "auc": 0.5, "auc_low": 0.45, "auc_high": 0.55, "sees_compatibility": False},
                },
                "sees_compatibility": sees,
            }
        )
    )
    return path


def _fixture(
    root: Path, seeds, best_fixed=(0.20, 0.21, 0.19), probe_auc: float | None = 0.8, control_se: float = 0.005
) -> tuple[dict, cl.Runs]:
    arms = {}
    for arm, (compat, fid) in VALUES.items():
        arms[arm] = []
        for s in seeds:
            run = arm if s == 0 else f"{arm}__s{s}"
            _write_run(
                root,
                run,
                s,
                compat[s],
                fid[s],
                1.0,
                ("pred_bbox", "gt_bbox") if run == "retrievegan" else ("pred_bbox",),
            )
            arms[arm].append(run)
            if arm == cl.C1_LEARNED:
                _write_controls(root, run, compat[s], best_fixed[s], best_fixed[s], control_se)
                if probe_auc is not None:
                    _write_probe(root, run, probe_auc)
    _write_run(root, "sg2im", 0, 0.0, 800, 0.05)
    _write_run(root, "layout2im", 0, 0.0, 900, 0.1, ("gt_bbox",))
    arms.update(cl.TABLE1_ARMS)
    files = list((root / "metrics").glob("*.json"))
    compat = list((root / "metrics" / "compatibility").glob("*.json"))
    controls = list((root / "metrics" / "c1_controls").glob("*.json"))
    probes = list((root / "metrics" / "d_probe").glob("*.json"))
    runs = cl.Runs(files, compat, {p.parent.name: p for p in (root / "models").glob("*/run.json")}, controls, probes)
    return arms, runs


def _study(path: Path, population: str, share: float) -> Path:
    rows = [
        {
            "population": population,
            "measure": "preference",
            "reference": "retrievegan",
            "other": other,
            "n": 400,
            "share": share,
            "wilson_low": share - 0.04,
            "wilson_high": share + 0.04,
            "p_holm": 1e-9,
            "significant_holm": True,
            "true_share_simulated": 0.9 if population == "simulated" else None,
        }
        for other in ("pastegan", "retrievegan_gt_only")
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_three_seeds_give_verdicts_in_both_directions_and_one_seed_none(tmp_path):
    arms, runs = _fixture(tmp_path / "three", (0, 1, 2))
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig(), _study(tmp_path / "sim.csv", "simulated", 0.9))
    v = dict(zip(claims["claim"], claims["verdict"]))
    assert v["C1"] == "supported"  # compatibility: learned > best fixed (0.31 vs 0.20) and > PasteGAN on every seed
    assert v["C1-eq4"] == "inconclusive"  # its learned arm (relaxed retrieval) is not in the fixture
    assert v["C4"] == "contradicted"  # non-iterative more compatible on every seed
    assert v["C2"] == "inconclusive"  # compatibility higher, FID interval contains 0
    assert v["C5"] == "inconclusive"  # sg2im / layout2im: one seed
    assert v["C6"] == "inconclusive"  # simulated participants are not people
    c2 = detail[(detail["claim"] == "C2") & detail["decides"].astype(bool)]
    assert set(c2["metric"]) == {"compat_pairwise_same_theme", "fid"} and set(c2["paired_seeds"]) == {3}
    c3 = claims.set_index("claim").loc["C3"]
    assert c3["verdict"] == "supported" or "fid" in c3["basis"]
    row = detail[(detail["claim"] == "C1") & (detail["arm_b"] == cl.BEST_FIXED)].iloc[0]
    assert math.isclose(row["difference"], 0.31 - 0.20, abs_tol=1e-9) and row["difference_low"] > 0
    assert row["within_seed_se"] == pytest.approx(0.005) and row["decides"]
    frozen = detail[(detail["claim"] == "C1") & (detail["arm_b"] == "retrievegan_ep_frozen")]
    assert not frozen["decides"].astype(bool).any()  # the trained E_p-frozen arm is context now
    assert (
        not detail[detail["decides"].astype(bool) & detail["claim"].isin(["C1", "C2", "C3", "C4"])]["p_holm"]
        .isna()
        .any()
    )
    assert "sees compatibility" in claims.set_index("claim").loc["C1", "basis"]
    people, _ = cl.evaluate_claims(arms, runs, cl.ClaimsConfig(), _study(tmp_path / "p.csv", "participants", 0.9))
    assert people.set_index("claim").loc["C6", "verdict"] == "supported"

    arms1, runs1 = _fixture(tmp_path / "one", (0,))
    claims1, _ = cl.evaluate_claims(arms1, runs1, cl.ClaimsConfig(), None)
    assert set(claims1["verdict"]) == {"inconclusive"}
    c1 = claims1.set_index("claim").loc["C1"]
    assert c1["paired_seeds"] == 1 and "1 paired training seed" in c1["basis"]
    assert not math.isnan(c1["value_a_low"])  # one seed: the within-seed (scene-graph) interval is shown
    assert not math.isnan(c1["difference_low"])  # and the paired bootstrap of the controls file


def test_c1_is_contradicted_by_a_better_fixed_embedding_and_not_testable_with_a_blind_discriminator(tmp_path):
    arms, runs = _fixture(tmp_path / "loses", (0, 1, 2), best_fixed=(0.38, 0.39, 0.37))
    claims, _ = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())
    c1 = claims.set_index("claim").loc["C1"]
    assert c1["verdict"] == "contradicted" and c1["difference"] < 0
    assert "worse than a fixed one at a matched scale" in c1["answer"] and "contradicted" in c1["answer"]
    arms, runs = _fixture(tmp_path / "blind", (0, 1, 2), best_fixed=(0.38, 0.39, 0.37), probe_auc=0.51)
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())
    c1 = claims.set_index("claim").loc["C1"]
    assert c1["verdict"] == "not testable"
    assert "does not see compatibility" in c1["basis"] and "would give 'contradicted'" in c1["basis"]
    assert "not testable here" in c1["answer"] and "AUC 0.51" in c1["answer"]
    assert set(detail[detail["claim"] == "C1"]["verdict"]) <= {"contradicted", "inconclusive", "supported"}
    arms, runs = _fixture(tmp_path / "small", (0, 1, 2), best_fixed=(0.28, 0.30, 0.29), control_se=0.0005)  # +0.02
    c1 = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())[0].set_index("claim").loc["C1"]
    assert c1["verdict"] == "inconclusive" and "below the declared minimum effect" in c1["basis"]
    arms, runs = _fixture(tmp_path / "unprobed", (0, 1, 2), probe_auc=None)
    c1 = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())[0].set_index("claim").loc["C1"]
    assert c1["verdict"] == "supported" and "no discriminator probe" in c1["basis"]


def test_the_markdown_has_one_name_per_metric_and_no_nan_cells(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    cl.write_claims(
        tmp_path / "claims.csv",
        tmp_path / "claims.md",
        tmp_path / "cmp.csv",
        arms,
        runs,
        cl.ClaimsConfig(),
        (0, 1, 2),
        _study(tmp_path / "sim.csv", "simulated", 0.9),
    )
    text = (tmp_path / "claims.md").read_text()
    assert "nan" not in text.replace("nanmean", "")
    assert "compat_pairwise " not in text and "compat_pairwise:" not in text  # always the full metric name
    assert "preference_share_simulated" in text and "C1 controls: fixed embeddings" in text
    assert "discriminator probe" in text and "The answers in one sentence each" in text


def test_an_arm_left_out_of_the_run_gives_inconclusive_rows_that_say_why_and_a_typo_is_an_error(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    del arms["retrievegan_ep_frozen"], arms["retrievegan_non_iterative"]  # config `claims.arms` without them
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())
    v = dict(zip(claims["claim"], claims["verdict"]))
    assert v["C4"] == "inconclusive" and v["C2"] == "inconclusive"  # C4 contradicted with the arm (test above)
    frozen = detail[detail["arm_b"] == "retrievegan_ep_frozen"]
    assert len(frozen) > 0 and set(frozen["verdict"]) == {"inconclusive"} and frozen["difference"].isna().all()
    assert set(frozen["decides"]) == {False}
    assert all("retrievegan_ep_frozen not trained in this run" in r and "claims_full" in r for r in frozen["reason"])
    assert not frozen["value_a"].isna().any() and frozen["value_b"].isna().all()  # the arm that ran keeps its values
    assert claims.set_index("claim").loc["C1", "arm_b"] == cl.BEST_FIXED  # C1's row: its first deciding comparison
    pastegan = detail[(detail["claim"] == "C1") & (detail["arm_b"] == "pastegan")]
    assert set(pastegan["paired_seeds"]) == {3} and not pastegan["difference"].isna().any()  # the rest still counts
    arms["retrievegan_ep_frozn"] = ["x"]
    with pytest.raises(ValueError, match="unknown claim arm"):
        cl.write_claims(tmp_path / "c.csv", tmp_path / "c.md", tmp_path / "d.csv", arms, runs, cl.ClaimsConfig(), (0,))


def test_the_claims_command_writes_its_outputs_and_a_provenance_line(tmp_path, capsys):
    from retrievegan import runinfo
    from retrievegan.cli import main as cli_main

    arms, _ = _fixture(tmp_path, (0, 1, 2))
    files = [str(p) for p in (tmp_path / "metrics").glob("*.json")]
    compat = [str(p) for p in (tmp_path / "metrics" / "compatibility").glob("*.json")]
    run_json = [str(p) for p in (tmp_path / "models").glob("*/run.json")]
    out = tmp_path / "claims.csv"
    code = cli_main(
        [
            "claims",
            "--seeds",
            "0",
            "1",
            "2",
            "--arms",
            json.dumps(arms),
            "--metrics",
            *files,
            "--compatibility",
            *compat,
            "--run-json",
            *run_json,
            "--out-csv",
            str(out),
            "--c1-controls",
            *map(str, (tmp_path / "metrics" / "c1_controls").glob("*.json")),
            "--d-probe",
            *map(str, (tmp_path / "metrics" / "d_probe").glob("*.json")),
            "--out-md",
            str(tmp_path / "claims.md"),
            "--out-comparisons",
            str(tmp_path / "cmp.csv"),
        ]
    )
    assert code in (0, None) and list(pd.read_csv(out)["claim"]) == ["C1", "C1-eq4", "C2", "C3", "C4", "C5", "C6"]
    record = runinfo.read_provenance(capsys.readouterr().err.splitlines())[out.as_posix()]
    assert record["git_sha"] and record["recorded_utc"]


def test_the_repository_configs_claims_section_parses():
    """The `claims` section as the rule passes it (JSON of config/config.yaml's section) is a valid ClaimsConfig."""
    from retrievegan.config import from_json, load_yaml

    section = load_yaml(Path(__file__).resolve().parents[2] / "config" / "config.yaml")["claims"]
    cfg = from_json(cl.ClaimsConfig, json.dumps(section), "claims")
    assert cfg.arms is not None and set(cfg.arms) < set(m.CLAIM_ARMS) and "retrievegan_ep_frozen" not in cfg.arms


def test_two_runs_of_one_arm_with_the_same_seed_are_an_error(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    runs.seeds["retrievegan__s1"] = 0
    with pytest.raises(InputError, match="training seed 0"):
        cl.evaluate_claims(arms, runs, cl.ClaimsConfig())


def test_write_claims_writes_csv_markdown_and_the_trace(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    losses = tmp_path / "losses.jsonl"
    losses.write_text(
        "\n".join(
            json.dumps(
                {
                    "step": s,
                    "meta": {
                        "ep_grad/generation": 0.01,
                        "ep_grad/gt_sel": 0.2,
                        "retrieval/score_std": 0.5,
                        "images_per_s": 3,
                    },
                }
            )
            for s in (10, 20, 30, 40)
        )
        + "\n"
    )
    out = cl.write_claims(
        tmp_path / "claims.csv",
        tmp_path / "claims.md",
        tmp_path / "cmp.csv",
        arms,
        runs,
        cl.ClaimsConfig(),
        (0, 1, 2),
        losses={"retrievegan__s1": losses},
    )
    assert list(out["claim"]) == ["C1", "C1-eq4", "C2", "C3", "C4", "C5", "C6"]
    assert list(pd.read_csv(tmp_path / "claims.csv")["claim"]) == ["C1", "C1-eq4", "C2", "C3", "C4", "C5", "C6"]
    text = (tmp_path / "claims.md").read_text()
    assert text.index("Verdict rule") < text.index("| claim |")  # the rule comes before the numbers
    assert "20.0x the one of the generation losses" in text and "below the Gumbel" not in text


def test_claim_runs_reuse_the_configured_seed_and_name_the_others():
    config = {"train": {"seed": 0}, "retrievegan": {}, "pastegan": {}, "retrieval": {"greedy": True}}
    assert m.claim_run(config, "retrievegan", 0) == "retrievegan"
    assert m.claim_run(config, "retrievegan_ep_frozen", 2) == "retrievegan_ep_frozen__s2"
    cfg = m.run_config(config, "retrievegan_ep_frozen__s2")
    assert cfg["retrievegan"]["freeze_retriever"] is True and cfg["retrievegan"]["train"]["seed"] == 2
    assert m.method_info("retrievegan_ep_frozen__s2").ablation == (False, False)
    assert m.run_config(config, "retrievegan_non_iterative")["retrieval"]["greedy"] is False
    assert m.training_seed({**config, "pastegan": {"train": {"seed": 3}}}, "pastegan") == 3
    with pytest.raises(ValueError, match="no declared run"):
        m.claim_run(config, "retrievegan", 9)
    assert not set(m.CLAIM_VARIANTS) & set(m.TABLE2_VARIANTS)


def test_headline_block_is_rendered_from_the_stored_reference_and_checked(tmp_path):
    import shutil

    ref = tmp_path / "ref"
    shutil.copytree(ROOT / "reference-run" / "results" / "synth", ref)
    block = headline.render(ref)
    assert block.startswith(headline.BEGIN) and block.endswith(headline.END) and "RetrieveGAN" in block
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{headline.BEGIN}\nold\n{headline.END}\nrest\n")
    assert not headline.readme_matches(readme, block)
    headline.write_readme(readme, block)
    assert headline.readme_matches(readme, block) and readme.read_text().startswith("intro\n")
    target = ref / "metrics" / "real_data.json"
    target.write_text(target.read_text().replace("1", "2", 1))
    with pytest.raises(InputError, match="differs from the file recorded"):
        headline.render(ref)


def test_headline_record_takes_commit_and_date_from_the_job_logs(tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(ROOT / "reference-run" / "results" / "synth", results)
    (results / headline.PROVENANCE).unlink()
    with pytest.raises(InputError, match="no \\[provenance\\] line"):
        headline.record_reference(results, tmp_path / "ref")
    (results / "logs").mkdir()
    (results / "logs" / "train_sg2im.log").write_text(
        "noise\n[provenance] results/synth/models/sg2im/run.json "
        '{"git_sha": "abc123", "recorded_utc": "2026-11-20T10:00:00+00:00"}\n'
    )
    (results / "logs" / "metrics.log").write_text(
        '[provenance] results/synth/metrics/x.json {"git_sha": "def456", "recorded_utc": "2026-11-21T01:00:00+00:00"}\n'
    )
    headline.record_reference(results, tmp_path / "ref")
    prov = json.loads((tmp_path / "ref" / headline.PROVENANCE).read_text())
    assert prov["commits"] == ["abc123", "def456"] and prov["date"] == "2026-11-21"
    assert headline.render(tmp_path / "ref").startswith(headline.BEGIN)


def test_the_readme_headline_figures_are_those_of_the_stored_reference_run():
    block = headline.render(ROOT / "reference-run" / "results" / "synth")
    assert headline.readme_matches(ROOT / "README.md", block), (
        "README.md's headline block differs from reference-run/: run `retrievegan headline --write`"
    )


def test_non_iterative_retrieval_differs_only_in_the_query_update():
    from retrievegan.models.retrieval import iterative_retrieval

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 4, 6, 5, generator=g)
    mask = torch.ones(3, 4, 6, dtype=torch.bool)
    mask[1, 3] = False  # an object without candidates
    noise = -torch.log(-torch.log(torch.rand(4, 3, 4, 6, generator=g)))
    query = feats[:, 0, 0].clone()
    for mode in ("hard", "soft", "relaxed"):
        greedy = iterative_retrieval(feats, mask, mode=mode, query=query, noise=noise, greedy=True)
        fixed = iterative_retrieval(feats, mask, mode=mode, query=query, noise=noise, greedy=False)
        assert torch.equal(fixed.query, query)
        if mode == "hard":  # the first iteration is the same: same object, same patch
            first = greedy.step == 0
            assert torch.equal(first, fixed.step == 0)
            assert torch.equal(greedy.index[first], fixed.index[first])
    # without noise and without the update, each object independently takes its candidate nearest the query
    fixed = iterative_retrieval(feats, mask, mode="hard", query=query, gumbel=False, greedy=False)
    dist = torch.linalg.vector_norm(feats - query[:, None, None, :], dim=-1)
    nearest = dist.argmin(-1)
    valid = mask.any(-1)
    assert torch.equal(fixed.index[valid], nearest[valid])
    greedy = iterative_retrieval(feats, mask, mode="hard", query=query, gumbel=False, greedy=True)
    assert not torch.equal(greedy.index[valid], nearest[valid])  # the query update changes later selections


def test_frozen_e_p_is_never_updated_and_the_trace_leaves_training_unchanged(tiny_dataset, tmp_path):
    from patchgan_support import build_inputs, retrievegan_params
    from train_support import train_config

    from retrievegan.train.loop import load_trained, train

    inputs = build_inputs(tiny_dataset.patches_dir, tmp_path / "inputs")
    runs = {}
    for name, method, overrides in (
        ("trace", "retrievegan", {}),
        ("no_trace", "retrievegan", {"trace_retriever": False}),
        ("frozen", "retrievegan_no_gt_no_occur", {"freeze_retriever": True}),
    ):
        params = retrievegan_params(method, **overrides)
        result = train(
            method,
            params,
            train_config(steps=3, log_every=1, checkpoint_every=10),
            tiny_dataset.data_dir,
            tmp_path / name,
            patches_csv=inputs.patches_csv,
            inputs=inputs.retrievegan(),
            progress=False,
        )
        runs[name] = result.checkpoint
    a, b = (load_trained(runs[k])[2]["networks"] for k in ("trace", "no_trace"))
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key}: the trace changed training"
    meta = [json.loads(line)["meta"] for line in (tmp_path / "trace" / "losses.jsonl").read_text().splitlines()]
    assert all(
        k in meta[0]
        for k in (
            "ep_grad/generation",
            "ep_grad/gt_sel",
            "ep_grad/occur_sel",
            "ep_grad/total",
            "retrieval/score_std",
            "retrieval/entropy_ratio",
        )
    )
    assert meta[0]["ep_grad/generation"] > 0
    assert not any(
        k.startswith("ep_grad/")
        for line in (tmp_path / "no_trace" / "losses.jsonl").read_text().splitlines()
        for k in json.loads(line)["meta"]
    )
    initial = torch.load(sorted((tmp_path / "frozen" / "snapshots").glob("step_*.pt"))[0], weights_only=False)
    final = load_trained(runs["frozen"])[2]["networks"]
    for key, value in initial["networks"]["retriever"].items():
        assert torch.equal(value, final["retriever"][key])
    assert any(not torch.equal(v, final["generator"][k]) for k, v in initial["networks"]["generator"].items())
    frozen_meta = json.loads((tmp_path / "frozen" / "losses.jsonl").read_text().splitlines()[0])["meta"]
    assert "retrieval/score_std" in frozen_meta and "ep_grad/generation" not in frozen_meta
    assert "frozen" in json.loads((tmp_path / "frozen" / "run.json").read_text())["method_notes"]["retriever"]

    from retrievegan.eval.compat_trace import compatibility_trace

    themed = build_inputs(tiny_dataset.patches_dir, tmp_path / "themed", themed=True)
    result = train(
        "retrievegan",
        retrievegan_params(),
        train_config(steps=2, snapshot_every=1, checkpoint_every=10),
        tiny_dataset.data_dir,
        tmp_path / "themed_run",
        patches_csv=themed.patches_csv,
        inputs=themed.retrievegan(),
        progress=False,
    )
    rec = compatibility_trace(
        result.checkpoint,
        tmp_path / "themed_run" / "snapshots",
        tiny_dataset.data_dir,
        themed.patches_csv,
        tmp_path / "trace.json",
        split="val",
        batch_size=4,
        device_name="cpu",
        n_boot=50,
        progress=False,
    )
    assert rec["steps"] == [0, 1, 2] and len(rec["scores"]["compat_pairwise_same_theme"]) == 3
    assert all(0 <= v <= 1 for v in rec["scores"]["compat_pairwise_same_theme"])
    assert json.loads((tmp_path / "trace.json").read_text())["split"] == "val"


def test_trace_tables_give_each_snapshot_schedule_its_own_table():
    """A run with another snapshot schedule (claims.long_training: 4x the steps) gets its own table: every row has
    as many cells as its header."""

    def trace(method, steps):
        vals = [0.1 + 0.01 * i for i in range(len(steps))]
        return {
            "method": method,
            "steps": list(steps),
            "split": "val",
            "random_candidates": {"compat_pairwise_same_theme": 0.144},
            "scores": {
                "compat_pairwise_same_theme": vals,
                "compat_pairwise_same_theme_low": vals,
                "compat_pairwise_same_theme_high": vals,
            },
        }

    traces = [trace("a", (0, 50, 100)), trace("b", (0, 50, 100)), trace("long", (0, 50, 100, 150, 200))]
    lines = cl.trace_lines(pd.DataFrame(), traces, {}, ())
    tables, header = [], None
    for line in lines:
        if line.startswith("| run |"):
            header = line.count("|")
            tables.append([])
        elif line.startswith("| `") and header is not None:
            assert line.count("|") == header, line
            tables[-1].append(line.split("`")[1])
    assert tables == [["a", "b"], ["long"]]


def test_only_evaluates_the_named_claims_with_their_own_holm_family(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig(), only=["C1", "C1-eq4"])
    assert list(claims["claim"]) == ["C1", "C1-eq4"] and set(detail["claim"]) == {"C1", "C1-eq4"}
    full = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())[1]
    p_only = detail[(detail["arm_b"] == cl.BEST_FIXED) & (detail["claim"] == "C1")]["p_holm"].iloc[0]
    p_full = full[(full["arm_b"] == cl.BEST_FIXED) & (full["claim"] == "C1")]["p_holm"].iloc[0]
    assert p_only <= p_full  # a smaller family: a smaller correction
    with pytest.raises(ValueError, match="unknown claim"):
        cl.evaluate_claims(arms, runs, cl.ClaimsConfig(), only=["C7"])
