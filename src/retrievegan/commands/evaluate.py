"""Stages: synthnet, real-stats, real-metrics, metrics, compatibility, compat-summary, group-mass, compat-trace, d-probe,
c1-controls."""

from __future__ import annotations

import argparse

from retrievegan.config import from_json


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")
    if stage == "synthnet":
        parser.add_argument("--data-dir", required=True, help="canonical data folder (train/val images + graphs)")
        parser.add_argument("--out", required=True, help="checkpoint to write (synthnet.pt)")
        parser.add_argument("--quality", required=True, help="metric file with the held-out accuracy (for DVC)")
        parser.add_argument("--record", default=None, help="full training record (config, per-epoch history)")
        parser.add_argument("--threads", type=int, default=1)
    elif stage == "real-stats":
        parser.add_argument("--images", required=True, help="{split}_images.npy of the evaluated data")
        parser.add_argument("--split", required=True, choices=["train", "val", "test"])
        parser.add_argument("--synthnet", default=None, help="synthnet checkpoint (feature_extractor: synthnet)")
        parser.add_argument("--out", required=True, help=".npz with mu, sigma, IS-layer features, meta")
        parser.add_argument("--threads", type=int, default=1)
    elif stage == "real-metrics":
        parser.add_argument("--test-stats", required=True, help="reference statistics of the evaluated split")
        parser.add_argument("--reference-stats", required=True, help="statistics of the other real split")
        parser.add_argument("--synthnet", default=None)
        parser.add_argument("--out", required=True)
    elif stage == "metrics":
        parser.add_argument("--run-dir", required=True, help="sample folder samples/<method>/<setting>")
        parser.add_argument("--method", required=True)
        parser.add_argument("--setting", required=True, choices=["pred_bbox", "gt_bbox"])
        parser.add_argument("--split-json", required=True, help="canonical graphs of the evaluated split")
        parser.add_argument("--reference-stats", required=True, help="real statistics of that split (.npz)")
        parser.add_argument("--synthnet", default=None)
        parser.add_argument("--out", required=True, help="metric file (lean, for DVC)")
        parser.add_argument("--details", default=None, help="provenance file (weights, reference, manifest...)")
        parser.add_argument("--threads", type=int, default=1)
    elif stage == "compatibility":
        parser.add_argument("--retrievals", required=True, help="retrievals.json of one run")
        parser.add_argument("--patches-csv", required=True)
        parser.add_argument("--split-json", default=None, help="graphs of the evaluated split (checks counts)")
        parser.add_argument("--method", required=True)
        parser.add_argument("--setting", required=True, choices=["pred_bbox", "gt_bbox"])
        parser.add_argument("--out", required=True)
        parser.add_argument("--candidates", default=None,
                            help="pre-filter candidates.npy: add the random-among-the-same-candidates baseline")
        parser.add_argument("--candidates-k", type=int, default=None,
                            help="candidates per object the baseline draws from (default: all columns)")
    elif stage == "compat-summary":
        parser.add_argument("--compatibility", nargs="+", required=True, help="metrics/compatibility/*.json")
        parser.add_argument("--out", default=None, help="also write the table (.md or .csv)")
    elif stage == "group-mass":  # --params: the `sample` section (split, seeds, batch size, device)
        parser.add_argument("--checkpoint", required=True, help="a trained RetrieveGAN (or variant) checkpoint")
        parser.add_argument("--data-dir", required=True)
        parser.add_argument("--patches", required=True, help="patches.csv")
        parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                            help="override an extra input path recorded in the checkpoint")
        parser.add_argument("--out", required=True, help="metric file metrics/group_mass/<method>.json")
        parser.add_argument("--threads", type=int, default=1)
    elif stage == "compat-trace":  # --params: the `sample` section; --eval-params: bootstrap settings
        parser.add_argument("--eval-params", default="{}", help="JSON of the evaluation section (bootstrap)")
        parser.add_argument("--checkpoint", required=True, help="a trained RetrieveGAN (or variant) checkpoint")
        parser.add_argument("--snapshots", required=True, help="its snapshots/ folder (step_<n>.pt)")
        parser.add_argument("--data-dir", required=True)
        parser.add_argument("--split", required=True, choices=["train", "val", "test"])
        parser.add_argument("--patches", required=True, help="patches.csv")
        parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                            help="override an extra input path recorded in the checkpoint")
        parser.add_argument("--out", required=True, help="metrics/compat_trace/<run>.json")
        parser.add_argument("--threads", type=int, default=1)
    elif stage in ("d-probe", "c1-controls", "c1-mechanism"):  # --params: `claims.probe` / `.controls` / `.mechanism`
        parser.add_argument("--checkpoint", required=True, help="a trained patch method's checkpoint")
        if stage in ("c1-controls", "c1-mechanism"):
            parser.add_argument("--snapshots", required=True, help="its snapshots/ folder (step 0: E_p's init)")
            parser.add_argument("--test-split", default="test", choices=["train", "val", "test"])
        if stage == "c1-controls":
            parser.add_argument("--pastegan-retrievals", default=None,
                                help="PasteGAN's retrievals.json on the test split (its sets, paired with the learned arm's)")
        if stage in ("d-probe", "c1-mechanism"):
            parser.add_argument("--candidates", required=True, help="pre-filter candidates.npy")
        if stage == "c1-mechanism":
            parser.add_argument("--controls-params", default="{}", help="JSON of `claims.controls` (seeds, bootstrap)")
            parser.add_argument("--controls", default=None, help="metrics/c1_controls/<run>.json (fixed arms)")
        parser.add_argument("--data-dir", required=True)
        parser.add_argument("--patches", required=True, help="patches.csv")
        if stage != "c1-mechanism":  # the mechanism check runs on the CPU (small networks, a few hundred steps)
            parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
        parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                            help="override an extra input path recorded in the checkpoint")
        parser.add_argument("--out", required=True, help=f"metrics/{stage.replace('-', '_')}/<run>.json")
        parser.add_argument("--threads", type=int, default=1)
    else:
        raise ValueError(stage)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def run(stage: str, args: argparse.Namespace) -> None:
    import os

    # Before torch loads OpenMP (as `retrievegan train`, commands/training.py): idle worker threads sleep instead of
    # spinning. synthnet runs with 2 threads beside another job on 2 cores; spinning made synthnet's epoch cost ~6x
    # the CPU time (58 vs 10 CPU-s measured on the shared machine), same weights.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from retrievegan import io, runinfo
    from retrievegan.eval.metrics import EvaluationConfig

    if stage == "compat-summary":
        from retrievegan.eval.compatibility import summary_table

        text = summary_table(args.compatibility, args.out)
        print(text)
        return
    if stage == "group-mass":
        from retrievegan.commands.training import _inputs
        from retrievegan.eval.group_mass import measure_group_mass
        from retrievegan.eval.sampler import SampleConfig

        _threads(args.threads)
        sample_cfg = from_json(SampleConfig, args.params, "sample")
        result = measure_group_mass(args.checkpoint, args.data_dir, args.patches, args.out, sample_cfg.split,
                                    sample_cfg.seeds, sample_cfg.batch_size, sample_cfg.device, _inputs(args.input),
                                    progress=not args.no_progress)
        print(f"{result['method']}: {result['metrics']}")
        return
    if stage == "compat-trace":
        from retrievegan.commands.training import _inputs
        from retrievegan.eval.compat_trace import compatibility_trace
        from retrievegan.eval.sampler import SampleConfig

        _threads(args.threads)
        sample_cfg = from_json(SampleConfig, args.params, "sample")
        eval_cfg = from_json(EvaluationConfig, args.eval_params, "evaluation")
        result = compatibility_trace(args.checkpoint, args.snapshots, args.data_dir, args.patches, args.out,
                                     args.split, sample_cfg.seeds, sample_cfg.batch_size, sample_cfg.device,
                                     eval_cfg.bootstrap_samples, eval_cfg.confidence, eval_cfg.seed,
                                     _inputs(args.input), progress=not args.no_progress)
        print(f"{result['method']} ({args.split}): steps {result['steps']}: pairwise same-theme "
              f"{[round(v, 3) for v in result['scores']['compat_pairwise_same_theme']]}")
        return
    if stage == "d-probe":
        from retrievegan.commands.training import _inputs
        from retrievegan.eval.d_probe import ProbeConfig, discriminator_probe, probe_line

        _threads(args.threads)
        result = discriminator_probe(args.checkpoint, args.data_dir, args.patches, args.candidates, args.out,
                                     from_json(ProbeConfig, args.params, "claims.probe"), args.device,
                                     _inputs(args.input), progress=not args.no_progress)
        print(probe_line(result))
        return
    if stage == "c1-controls":
        from retrievegan.commands.training import _inputs
        from retrievegan.eval.c1_controls import ControlsConfig, c1_controls, controls_line

        _threads(args.threads)
        result = c1_controls(args.checkpoint, args.snapshots, args.data_dir, args.patches, args.out,
                             from_json(ControlsConfig, args.params, "claims.controls"), args.test_split, args.device,
                             _inputs(args.input), args.pastegan_retrievals, progress=not args.no_progress)
        print(controls_line(result))
        return
    if stage == "c1-mechanism":
        from retrievegan.commands.training import _inputs
        from retrievegan.eval.c1_controls import ControlsConfig
        from retrievegan.eval.mechanism import MechanismConfig, c1_mechanism, mechanism_line

        _threads(args.threads)
        result = c1_mechanism(args.checkpoint, args.snapshots, args.data_dir, args.patches, args.candidates,
                              args.controls, args.out, from_json(MechanismConfig, args.params, "claims.mechanism"),
                              from_json(ControlsConfig, args.controls_params, "claims.controls"), args.test_split,
                              _inputs(args.input), progress=not args.no_progress)
        print(mechanism_line(result))
        return
    if stage == "synthnet":
        import time
        from pathlib import Path

        from retrievegan.eval.synthnet import SynthNetConfig, train_synthnet

        _threads(args.threads)
        cfg = from_json(SynthNetConfig, args.params, "synthnet")
        started = time.perf_counter()
        record = train_synthnet(args.data_dir, cfg, args.out, verbose=True)
        measured = {"train_seconds": round(time.perf_counter() - started, 2)}
        io.write_json(args.quality, {k: record[k] for k in ("extractor", "num_train_images", "evaluated_on",
                                                            f"{record['evaluated_on']}_quality")})
        if args.record:
            io.write_json(args.record, record)
        runinfo.write_run_json(Path(args.out).parent, "synthnet", cfg, cfg.seed, {"data_dir": args.data_dir},
                               measured=measured)
        return
    cfg = from_json(EvaluationConfig, args.params, "evaluation")
    if stage == "real-stats":
        from retrievegan.eval.fidelity import compute_reference, resolve_extractor

        _threads(args.threads)
        extractor = resolve_extractor(cfg.feature_extractor, args.synthnet, cfg.inception_weights)
        meta = compute_reference(args.images, args.split, extractor, cfg.batch_size, cfg.device, args.out,
                                 verbose=not args.no_progress)
        print(f"{args.split}: statistics of {meta['num_images']} real images with {extractor.key} -> {args.out}")
    elif stage == "real-metrics":
        from retrievegan.eval.metrics import real_data_metrics

        record = real_data_metrics(args.test_stats, args.reference_stats, cfg, args.out, args.synthnet)
        print(record["metrics"])
    elif stage == "metrics":
        from retrievegan.eval.metrics import evaluate_run

        _threads(args.threads)
        record = evaluate_run(args.run_dir, args.method, args.setting, args.split_json, args.reference_stats, cfg,
                              args.out, args.synthnet, verbose=not args.no_progress, details_json=args.details)
        print(f"{args.method}/{args.setting}: {record['metrics']}")
    elif stage == "compatibility":
        from retrievegan.eval.compatibility import compatibility_score

        result = compatibility_score(args.retrievals, args.patches_csv, args.method, args.setting,
                                     cfg.bootstrap_samples, cfg.confidence, cfg.seed, args.split_json, args.out,
                                     args.candidates, args.candidates_k)
        print(f"{args.method}/{args.setting}: {result['metrics']}")
    else:
        raise ValueError(stage)
