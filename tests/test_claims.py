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

from retrievegan.errors import InputError
from retrievegan.eval import claims as cl
from retrievegan.eval import headline
from retrievegan.eval import methods as m

ROOT = Path(__file__).resolve().parents[1]


def test_the_verdict_rule_reads_the_interval_of_the_paired_difference_over_seeds():
    mean, low, high = cl.t_interval([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0 and math.isclose(high - mean, 4.302653 * 1.0 / math.sqrt(3), rel_tol=1e-5)
    assert cl.verdict(0.1, 0.5, 3, 3, higher=True)[0] == "supported"
    assert cl.verdict(0.1, 0.5, 3, 3, higher=False)[0] == "contradicted"
    assert cl.verdict(-0.5, -0.1, 3, 3, higher=False)[0] == "supported"
    assert cl.verdict(-0.1, 0.5, 5, 3, higher=True)[0] == "inconclusive"
    v, why = cl.verdict(0.1, 0.5, 2, 3, higher=True)  # excludes 0, but too few seeds
    assert v == "inconclusive" and "2 paired training seeds" in why
    assert cl.combine(["supported", "supported"]) == "supported"
    assert cl.combine(["supported", "inconclusive"]) == "inconclusive"
    assert cl.combine(["supported", "contradicted"]) == "contradicted"
    assert math.isnan(cl.t_interval([1.0], 0.95)[1])


def _write_run(root: Path, run: str, seed: int, compat: float, fid: float, ds: float,
               settings=("pred_bbox",)) -> None:
    (root / "models" / run).mkdir(parents=True, exist_ok=True)
    (root / "models" / run / "run.json").write_text(json.dumps({"seed": seed}))
    for setting in settings:
        tag = {"pred_bbox": "pred", "gt_bbox": "gt"}[setting]
        (root / "metrics" / "compatibility").mkdir(parents=True, exist_ok=True)
        (root / "metrics" / f"{run}_{setting}.json").write_text(json.dumps({
            "method": run, "setting": setting, "num_images": 100,
            "metrics": {f"fid_synthnet_test_{tag}": fid, f"ds_lpips_synthnet_test_{tag}": ds,
                        f"ds_lpips_synthnet_test_{tag}_std": 0.1}}))
        (root / "metrics" / "compatibility" / f"{run}_{setting}.json").write_text(json.dumps({
            "method": run, "setting": setting, "metrics": {
                "compat_pairwise_same_theme": compat, "compat_pairwise_same_theme_low": compat - 0.01,
                "compat_pairwise_same_theme_high": compat + 0.01, "compat_single_theme": compat / 2,
                "compat_single_theme_low": compat / 2 - 0.01, "compat_single_theme_high": compat / 2 + 0.01}}))


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


def _fixture(root: Path, seeds) -> tuple[dict, cl.Runs]:
    arms = {}
    for arm, (compat, fid) in VALUES.items():
        arms[arm] = []
        for s in seeds:
            run = arm if s == 0 else f"{arm}__s{s}"
            _write_run(root, run, s, compat[s], fid[s], 1.0, ("pred_bbox", "gt_bbox") if run == "retrievegan"
                       else ("pred_bbox",))
            arms[arm].append(run)
    _write_run(root, "sg2im", 0, 0.0, 800, 0.05)
    _write_run(root, "layout2im", 0, 0.0, 900, 0.1, ("gt_bbox",))
    arms.update(cl.TABLE1_ARMS)
    files = list((root / "metrics").glob("*.json"))
    compat = list((root / "metrics" / "compatibility").glob("*.json"))
    runs = cl.Runs(files, compat, {p.parent.name: p for p in (root / "models").glob("*/run.json")})
    return arms, runs


def _study(path: Path, population: str, share: float) -> Path:
    rows = [{"population": population, "measure": "preference", "reference": "retrievegan", "other": other,
             "n": 400, "share": share, "wilson_low": share - 0.04, "wilson_high": share + 0.04, "p_holm": 1e-9,
             "significant_holm": True, "true_share_simulated": 0.9 if population == "simulated" else None}
            for other in ("pastegan", "retrievegan_gt_only")]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_three_seeds_give_verdicts_in_both_directions_and_one_seed_none(tmp_path):
    arms, runs = _fixture(tmp_path / "three", (0, 1, 2))
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig(),
                                        _study(tmp_path / "sim.csv", "simulated", 0.9))
    v = dict(zip(claims["claim"], claims["verdict"]))
    assert v["C1"] == "supported"  # compatibility: trained > frozen and > PasteGAN on every seed
    assert v["C4"] == "contradicted"  # non-iterative more compatible on every seed
    assert v["C2"] == "inconclusive"  # compatibility higher, FID interval contains 0
    assert v["C5"] == "inconclusive"  # sg2im / layout2im: one seed
    assert v["C6"] == "inconclusive"  # simulated participants are not people
    c2 = detail[(detail["claim"] == "C2") & detail["decides"].astype(bool)]
    assert set(c2["metric"]) == {"compat_pairwise", "fid"} and set(c2["paired_seeds"]) == {3}
    c3 = claims.set_index("claim").loc["C3"]
    assert c3["verdict"] == "supported" or "fid" in c3["basis"]
    row = detail[(detail["claim"] == "C1") & (detail["arm_b"] == "retrievegan_ep_frozen")
                 & (detail["metric"] == "compat_pairwise")].iloc[0]
    assert math.isclose(row["difference"], 0.11, abs_tol=1e-9) and row["difference_low"] > 0
    people, _ = cl.evaluate_claims(arms, runs, cl.ClaimsConfig(), _study(tmp_path / "p.csv", "participants", 0.9))
    assert people.set_index("claim").loc["C6", "verdict"] == "supported"

    arms1, runs1 = _fixture(tmp_path / "one", (0,))
    claims1, _ = cl.evaluate_claims(arms1, runs1, cl.ClaimsConfig(), None)
    assert set(claims1["verdict"]) == {"inconclusive"}
    c1 = claims1.set_index("claim").loc["C1"]
    assert c1["paired_seeds"] == 1 and "1 paired training seed" in c1["basis"]
    assert not math.isnan(c1["value_a_low"])  # one seed: the within-seed (scene-graph) interval is shown


def test_an_arm_left_out_of_the_run_gives_inconclusive_rows_that_say_why_and_a_typo_is_an_error(tmp_path):
    arms, runs = _fixture(tmp_path, (0, 1, 2))
    del arms["retrievegan_ep_frozen"], arms["retrievegan_non_iterative"]  # config `claims.arms` without them
    claims, detail = cl.evaluate_claims(arms, runs, cl.ClaimsConfig())
    v = dict(zip(claims["claim"], claims["verdict"]))
    assert v["C4"] == "inconclusive" and v["C2"] == "inconclusive"  # C4 contradicted with the arm (test above)
    frozen = detail[detail["arm_b"] == "retrievegan_ep_frozen"]
    assert len(frozen) > 0 and set(frozen["verdict"]) == {"inconclusive"} and frozen["difference"].isna().all()
    assert all("retrievegan_ep_frozen not trained in this run" in r and "claims_full" in r for r in frozen["reason"])
    assert not frozen["value_a"].isna().any() and frozen["value_b"].isna().all()  # the arm that ran keeps its values
    assert claims.set_index("claim").loc["C1", "arm_b"] == "pastegan"  # the table shows a comparison with numbers
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
    code = cli_main(["claims", "--seeds", "0", "1", "2", "--arms", json.dumps(arms), "--metrics", *files,
                     "--compatibility", *compat, "--run-json", *run_json, "--out-csv", str(out),
                     "--out-md", str(tmp_path / "claims.md"), "--out-comparisons", str(tmp_path / "cmp.csv")])
    assert code in (0, None) and list(pd.read_csv(out)["claim"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    record = runinfo.read_provenance(capsys.readouterr().err.splitlines())[out.as_posix()]
    assert record["git_sha"] and record["recorded_utc"]


def test_the_repository_configs_claims_section_parses():
    """The `claims` section as the rule passes it (JSON of config/config.yaml's section) is a valid ClaimsConfig."""
    from retrievegan.config import from_json, load_yaml

    section = load_yaml(Path(__file__).resolve().parents[1] / "config" / "config.yaml")["claims"]
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
    losses.write_text("\n".join(json.dumps({"step": s, "meta": {"ep_grad/generation": 0.01, "ep_grad/gt_sel": 0.2,
                                                                "retrieval/score_std": 0.5, "images_per_s": 3}})
                                for s in (10, 20, 30, 40)) + "\n")
    out = cl.write_claims(tmp_path / "claims.csv", tmp_path / "claims.md", tmp_path / "cmp.csv", arms, runs,
                          cl.ClaimsConfig(), (0, 1, 2), losses={"retrievegan__s1": losses})
    assert list(out["claim"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert list(pd.read_csv(tmp_path / "claims.csv")["claim"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    text = (tmp_path / "claims.md").read_text()
    assert text.index("Verdict rule") < text.index("| claim |")  # the rule comes before the numbers
    assert "20.0x the one of the generation losses" in text and "below the Gumbel" not in text


def test_claim_runs_reuse_the_configured_seed_and_name_the_others():
    config = {"train": {"seed": 0}, "retrievegan": {}, "pastegan": {}, "retrieval": {"greedy": True}}
    assert m.claim_run(config, "retrievegan", 0) == "retrievegan"
    assert m.claim_run(config, "retrievegan_ep_frozen", 2) == "retrievegan_ep_frozen__s2"
    cfg = m.variant_config(config, "retrievegan_ep_frozen__s2")
    assert cfg["retrievegan"]["freeze_retriever"] is True and cfg["retrievegan"]["train"]["seed"] == 2
    assert m.method_info("retrievegan_ep_frozen__s2").ablation == (False, False)
    assert m.variant_config(config, "retrievegan_non_iterative")["retrieval"]["greedy"] is False
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
        '{"git_sha": "abc123", "recorded_utc": "2026-11-20T10:00:00+00:00"}\n')
    (results / "logs" / "metrics.log").write_text(
        '[provenance] results/synth/metrics/x.json {"git_sha": "def456", "recorded_utc": "2026-11-21T01:00:00+00:00"}\n')
    headline.record_reference(results, tmp_path / "ref")
    prov = json.loads((tmp_path / "ref" / headline.PROVENANCE).read_text())
    assert prov["commits"] == ["abc123", "def456"] and prov["date"] == "2026-11-21"
    assert headline.render(tmp_path / "ref").startswith(headline.BEGIN)


def test_the_readme_headline_figures_are_those_of_the_stored_reference_run():
    block = headline.render(ROOT / "reference-run" / "results" / "synth")
    assert headline.readme_matches(ROOT / "README.md", block), \
        "README.md's headline block differs from reference-run/: run `retrievegan headline --write`"


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
            first = (greedy.step == 0)
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
    for name, method, overrides in (("trace", "retrievegan", {}),
                                    ("no_trace", "retrievegan", {"trace_retriever": False}),
                                    ("frozen", "retrievegan_no_gt_no_occur", {"freeze_retriever": True})):
        params = retrievegan_params(method, **overrides)
        result = train(method, params, train_config(steps=3, log_every=1, checkpoint_every=10),
                       tiny_dataset.data_dir, tmp_path / name, patches_csv=inputs.patches_csv,
                       inputs=inputs.retrievegan(), progress=False)
        runs[name] = result.checkpoint
    a, b = (load_trained(runs[k])[2]["networks"] for k in ("trace", "no_trace"))
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key}: the trace changed training"
    meta = [json.loads(line)["meta"] for line in (tmp_path / "trace" / "losses.jsonl").read_text().splitlines()]
    assert all(k in meta[0] for k in ("ep_grad/generation", "ep_grad/gt_sel", "ep_grad/occur_sel", "ep_grad/total",
                                      "retrieval/score_std", "retrieval/entropy_ratio"))
    assert meta[0]["ep_grad/generation"] > 0
    assert not any(k.startswith("ep_grad/") for line in (tmp_path / "no_trace" / "losses.jsonl").read_text()
                   .splitlines() for k in json.loads(line)["meta"])
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
    result = train("retrievegan", retrievegan_params(), train_config(steps=2, snapshot_every=1, checkpoint_every=10),
                   tiny_dataset.data_dir, tmp_path / "themed_run", patches_csv=themed.patches_csv,
                   inputs=themed.retrievegan(), progress=False)
    rec = compatibility_trace(result.checkpoint, tmp_path / "themed_run" / "snapshots", tiny_dataset.data_dir,
                              themed.patches_csv, tmp_path / "trace.json", split="val", batch_size=4,
                              device_name="cpu", n_boot=50, progress=False)
    assert rec["steps"] == [0, 1, 2] and len(rec["scores"]["compat_pairwise_same_theme"]) == 3
    assert all(0 <= v <= 1 for v in rec["scores"]["compat_pairwise_same_theme"])
    assert json.loads((tmp_path / "trace.json").read_text())["split"] == "val"


def test_trace_tables_give_each_snapshot_schedule_its_own_table():
    """A run with another snapshot schedule (claims.long_training: 4x the steps) gets its own table: every row has
    as many cells as its header."""
    def trace(method, steps):
        vals = [0.1 + 0.01 * i for i in range(len(steps))]
        return {"method": method, "steps": list(steps), "split": "val", "random_candidates":
                {"compat_pairwise_same_theme": 0.144}, "scores": {"compat_pairwise_same_theme": vals,
                                                                  "compat_pairwise_same_theme_low": vals,
                                                                  "compat_pairwise_same_theme_high": vals}}

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
