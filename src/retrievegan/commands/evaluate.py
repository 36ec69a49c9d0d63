"""Stages: synthnet, real-stats, real-metrics, metrics, compatibility, compat-summary, group-mass, compat-trace, d-probe,
c1-controls, c1-mechanism.

Every stage here waits passively (``passive_wait``, as ``retrievegan train``): synthnet runs with 2 threads beside
another job on 2 cores, where spinning OpenMP threads cost ~6x its CPU time.
"""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import Threads, stage
from retrievegan.commands.training import _inputs
from retrievegan.config import from_json

THREADS = Threads(default=1)
SETTINGS = ["pred_bbox", "gt_bbox"]
SPLITS = ["train", "val", "test"]


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")


def _override_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="override an extra input path recorded in the checkpoint",
    )


def _evaluation_config(args: argparse.Namespace):
    from retrievegan.eval.metrics import EvaluationConfig

    return from_json(EvaluationConfig, args.params, "evaluation")


def _synthnet_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--data-dir", required=True, help="canonical data folder (train/val images + graphs)")
    parser.add_argument("--out", required=True, help="checkpoint to write (synthnet.pt)")
    parser.add_argument("--quality", required=True, help="metric file with the held-out accuracy (for DVC)")
    parser.add_argument("--record", default=None, help="full training record (config, per-epoch history)")
    THREADS.add_to(parser)


@stage(
    "synthnet",
    help="train the embedded benchmark's evaluation network (theme + category classifier) for torch-fidelity",
    arguments=_synthnet_arguments,
    passive_wait=True,
)
def synthnet(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from retrievegan import io, runinfo
    from retrievegan.eval.synthnet import SynthNetConfig, train_synthnet

    cfg = from_json(SynthNetConfig, args.params, "synthnet")
    started = time.perf_counter()
    record = train_synthnet(args.data_dir, cfg, args.out, verbose=True)
    measured = {"train_seconds": round(time.perf_counter() - started, 2)}
    io.write_json(
        args.quality,
        {k: record[k] for k in ("extractor", "num_train_images", "evaluated_on", f"{record['evaluated_on']}_quality")},
    )
    if args.record:
        io.write_json(args.record, record)
    runinfo.write_run_json(
        Path(args.out).parent, "synthnet", cfg, cfg.seed, {"data_dir": args.data_dir}, measured=measured
    )


def _real_stats_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--images", required=True, help="{split}_images.npy of the evaluated data")
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--synthnet", default=None, help="synthnet checkpoint (feature_extractor: synthnet)")
    parser.add_argument("--out", required=True, help=".npz with mu, sigma, IS-layer features, meta")
    THREADS.add_to(parser)


@stage(
    "real-stats",
    help="FID statistics and IS features of a real split, stored in a declared .npz",
    arguments=_real_stats_arguments,
    passive_wait=True,
)
def real_stats(args: argparse.Namespace) -> None:
    from retrievegan.eval.fidelity import compute_reference, resolve_extractor

    cfg = _evaluation_config(args)
    extractor = resolve_extractor(cfg.feature_extractor, args.synthnet, cfg.inception_weights)
    meta = compute_reference(
        args.images, args.split, extractor, cfg.batch_size, cfg.device, args.out, verbose=not args.no_progress
    )
    print(f"{args.split}: statistics of {meta['num_images']} real images with {extractor.key} -> {args.out}")


def _real_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--test-stats", required=True, help="reference statistics of the evaluated split")
    parser.add_argument("--reference-stats", required=True, help="statistics of the other real split")
    parser.add_argument("--synthnet", default=None)
    parser.add_argument("--out", required=True)


@stage(
    "real-metrics",
    help="the real-data row (IS of the real test split, FID test vs. another real split)",
    arguments=_real_metrics_arguments,
    passive_wait=True,
)
def real_metrics(args: argparse.Namespace) -> None:
    from retrievegan.eval.metrics import real_data_metrics

    record = real_data_metrics(args.test_stats, args.reference_stats, _evaluation_config(args), args.out, args.synthnet)
    print(record["metrics"])


def _metrics_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--run-dir", required=True, help="sample folder samples/<method>/<setting>")
    parser.add_argument("--method", required=True)
    parser.add_argument("--setting", required=True, choices=SETTINGS)
    parser.add_argument("--split-json", required=True, help="canonical graphs of the evaluated split")
    parser.add_argument("--reference-stats", required=True, help="real statistics of that split (.npz)")
    parser.add_argument("--synthnet", default=None)
    parser.add_argument("--out", required=True, help="metric file (lean, for DVC)")
    parser.add_argument("--details", default=None, help="provenance file (weights, reference, manifest...)")
    THREADS.add_to(parser)


@stage(
    "metrics",
    help="FID / IS (torch-fidelity) and DS (LPIPS sample0 vs sample1) of one sample folder",
    arguments=_metrics_arguments,
    passive_wait=True,
)
def metrics(args: argparse.Namespace) -> None:
    from retrievegan.eval.metrics import evaluate_run

    record = evaluate_run(
        args.run_dir,
        args.method,
        args.setting,
        args.split_json,
        args.reference_stats,
        _evaluation_config(args),
        args.out,
        args.synthnet,
        verbose=not args.no_progress,
        details_json=args.details,
    )
    print(f"{args.method}/{args.setting}: {record['metrics']}")


def _compatibility_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--retrievals", required=True, help="retrievals.json of one run")
    parser.add_argument("--patches-csv", required=True)
    parser.add_argument("--split-json", default=None, help="graphs of the evaluated split (checks counts)")
    parser.add_argument("--method", required=True)
    parser.add_argument("--setting", required=True, choices=SETTINGS)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--candidates",
        default=None,
        help="pre-filter candidates.npy: add the random-among-the-same-candidates baseline",
    )
    parser.add_argument(
        "--candidates-k",
        type=int,
        default=None,
        help="candidates per object the baseline draws from (default: all columns)",
    )


@stage(
    "compatibility",
    help="share of retrieved patch sets from one theme, pairwise same-theme rate, bootstrap interval",
    arguments=_compatibility_arguments,
    passive_wait=True,
)
def compatibility(args: argparse.Namespace) -> None:
    from retrievegan.eval.compatibility import compatibility_score

    cfg = _evaluation_config(args)
    result = compatibility_score(
        args.retrievals,
        args.patches_csv,
        args.method,
        args.setting,
        cfg.bootstrap_samples,
        cfg.confidence,
        cfg.seed,
        args.split_json,
        args.out,
        args.candidates,
        args.candidates_k,
    )
    print(f"{args.method}/{args.setting}: {result['metrics']}")


def _compat_summary_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--compatibility", nargs="+", required=True, help="metrics/compatibility/*.json")
    parser.add_argument("--out", default=None, help="also write the table (.md or .csv)")


@stage(
    "compat-summary",
    help="print (and write) the compatibility scores of several runs beside random choice among the "
    "same pre-filter candidates and the chance level",
    arguments=_compat_summary_arguments,
    passive_wait=True,
)
def compat_summary(args: argparse.Namespace) -> None:
    from retrievegan.eval.compatibility import summary_table

    print(summary_table(args.compatibility, args.out))


def _group_mass_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)  # the `sample` section (split, seeds, batch size, device)
    parser.add_argument("--checkpoint", required=True, help="a trained RetrieveGAN (or variant) checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--patches", required=True, help="patches.csv")
    _override_inputs(parser)
    parser.add_argument("--out", required=True, help="metric file metrics/group_mass/<method>.json")
    THREADS.add_to(parser)


@stage(
    "group-mass",
    help="how often eq. 4's literal relaxation (retrieval mode relaxed) puts > 1 unit of mass on a group",
    arguments=_group_mass_arguments,
    passive_wait=True,
)
def group_mass(args: argparse.Namespace) -> None:
    from retrievegan.eval.group_mass import measure_group_mass
    from retrievegan.eval.sampler import SampleConfig

    sample_cfg = from_json(SampleConfig, args.params, "sample")
    result = measure_group_mass(
        args.checkpoint,
        args.data_dir,
        args.patches,
        args.out,
        sample_cfg.split,
        sample_cfg.seeds,
        sample_cfg.batch_size,
        sample_cfg.device,
        _inputs(args.input),
        progress=not args.no_progress,
    )
    print(f"{result['method']}: {result['metrics']}")


def _compat_trace_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)  # the `sample` section; --eval-params: bootstrap settings
    parser.add_argument("--eval-params", default="{}", help="JSON of the evaluation section (bootstrap)")
    parser.add_argument("--checkpoint", required=True, help="a trained RetrieveGAN (or variant) checkpoint")
    parser.add_argument("--snapshots", required=True, help="its snapshots/ folder (step_<n>.pt)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--patches", required=True, help="patches.csv")
    _override_inputs(parser)
    parser.add_argument("--out", required=True, help="metrics/compat_trace/<run>.json")
    THREADS.add_to(parser)


@stage(
    "compat-trace",
    help="compatibility of a RetrieveGAN run's retrievals at every generator snapshot (E_p over training)",
    arguments=_compat_trace_arguments,
    passive_wait=True,
)
def compat_trace(args: argparse.Namespace) -> None:
    from retrievegan.eval.compat_trace import compatibility_trace
    from retrievegan.eval.metrics import EvaluationConfig
    from retrievegan.eval.sampler import SampleConfig

    sample_cfg = from_json(SampleConfig, args.params, "sample")
    eval_cfg = from_json(EvaluationConfig, args.eval_params, "evaluation")
    result = compatibility_trace(
        args.checkpoint,
        args.snapshots,
        args.data_dir,
        args.patches,
        args.out,
        args.split,
        sample_cfg.seeds,
        sample_cfg.batch_size,
        sample_cfg.device,
        eval_cfg.bootstrap_samples,
        eval_cfg.confidence,
        eval_cfg.seed,
        _inputs(args.input),
        progress=not args.no_progress,
    )
    print(
        f"{result['method']} ({args.split}): steps {result['steps']}: pairwise same-theme "
        f"{[round(v, 3) for v in result['scores']['compat_pairwise_same_theme']]}"
    )


# d-probe, c1-controls, c1-mechanism: --params is `claims.probe` / `claims.controls` / `claims.mechanism`


def _trained_checkpoint(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--checkpoint", required=True, help="a trained patch method's checkpoint")


def _snapshots_and_test_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshots", required=True, help="its snapshots/ folder (step 0: E_p's init)")
    parser.add_argument("--test-split", default="test", choices=SPLITS)


def _candidates(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", required=True, help="pre-filter candidates.npy")


def _probe_tail(parser: argparse.ArgumentParser, name: str, device: bool) -> None:
    """The options closing d-probe, c1-controls and c1-mechanism (``device``: whether the stage takes --device)."""
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--patches", required=True, help="patches.csv")
    if device:
        parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    _override_inputs(parser)
    parser.add_argument("--out", required=True, help=f"metrics/{name.replace('-', '_')}/<run>.json")
    THREADS.add_to(parser)


def _d_probe_arguments(parser: argparse.ArgumentParser) -> None:
    _trained_checkpoint(parser)
    _candidates(parser)
    _probe_tail(parser, "d-probe", device=True)


@stage(
    "d-probe",
    help="does a trained patch method's discriminator see compatibility? AUC of same- vs mixed-theme composites",
    arguments=_d_probe_arguments,
    passive_wait=True,
)
def d_probe(args: argparse.Namespace) -> None:
    from retrievegan.eval.d_probe import ProbeConfig, discriminator_probe, probe_line

    result = discriminator_probe(
        args.checkpoint,
        args.data_dir,
        args.patches,
        args.candidates,
        args.out,
        from_json(ProbeConfig, args.params, "claims.probe"),
        args.device,
        _inputs(args.input),
        progress=not args.no_progress,
    )
    print(probe_line(result))


def _c1_controls_arguments(parser: argparse.ArgumentParser) -> None:
    _trained_checkpoint(parser)
    _snapshots_and_test_split(parser)
    parser.add_argument(
        "--pastegan-retrievals",
        default=None,
        help="PasteGAN's retrievals.json on the test split (its sets, paired with the learned arm's)",
    )
    _probe_tail(parser, "c1-controls", device=True)


@stage(
    "c1-controls",
    help="claim C1's controls: fixed patch embeddings at a val-tuned scale vs the learned E_p, scored on test",
    arguments=_c1_controls_arguments,
    passive_wait=True,
)
def c1_controls(args: argparse.Namespace) -> None:
    from retrievegan.eval.c1_controls import ControlsConfig, controls_line
    from retrievegan.eval.c1_controls import c1_controls as run_controls

    result = run_controls(
        args.checkpoint,
        args.snapshots,
        args.data_dir,
        args.patches,
        args.out,
        from_json(ControlsConfig, args.params, "claims.controls"),
        args.test_split,
        args.device,
        _inputs(args.input),
        args.pastegan_retrievals,
        progress=not args.no_progress,
    )
    print(controls_line(result))


def _c1_mechanism_arguments(parser: argparse.ArgumentParser) -> None:
    _trained_checkpoint(parser)
    _snapshots_and_test_split(parser)
    _candidates(parser)
    parser.add_argument("--controls-params", default="{}", help="JSON of `claims.controls` (seeds, bootstrap)")
    parser.add_argument("--controls", default=None, help="metrics/c1_controls/<run>.json (fixed arms)")
    # no --device: the mechanism check runs on the CPU (small networks, a few hundred steps)
    _probe_tail(parser, "c1-mechanism", device=False)


@stage(
    "c1-mechanism",
    help="claim C1's positive control: E_p trained through the retrieval by a frozen compatibility critic",
    arguments=_c1_mechanism_arguments,
    passive_wait=True,
)
def c1_mechanism(args: argparse.Namespace) -> None:
    from retrievegan.eval.c1_controls import ControlsConfig
    from retrievegan.eval.mechanism import MechanismConfig, mechanism_line
    from retrievegan.eval.mechanism import c1_mechanism as run_mechanism

    result = run_mechanism(
        args.checkpoint,
        args.snapshots,
        args.data_dir,
        args.patches,
        args.candidates,
        args.controls,
        args.out,
        from_json(MechanismConfig, args.params, "claims.mechanism"),
        from_json(ControlsConfig, args.controls_params, "claims.controls"),
        args.test_split,
        _inputs(args.input),
        progress=not args.no_progress,
    )
    print(mechanism_line(result))
