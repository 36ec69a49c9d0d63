"""`retrievegan <stage> ...`: the command every Snakemake rule calls.

Each stage parses its arguments (every path comes from the caller; hyperparameters come as the JSON
of one validated config section via ``--params``) and calls one library function. Stages live in
``STAGES`` as ``name -> module`` pairs: ``configure(stage, parser)`` registers the options and
``run(stage, args)`` does the work (returning None, or an exit status for a check such as ``verify``),
both in the named module, imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from retrievegan.errors import ConfigError, InputError

# stage name -> module holding `configure(stage, parser)` and `run(stage, args)`
STAGES: dict[str, str] = {
    "synth": "retrievegan.commands.data",
    "preprocess": "retrievegan.commands.data",
    "dataset-table": "retrievegan.commands.data",
    "patches": "retrievegan.commands.data",
    "category-cnn": "retrievegan.commands.embed",
    "patch-features": "retrievegan.commands.embed",
    "cooccur": "retrievegan.commands.embed",
    "prefilter": "retrievegan.commands.embed",
    "train": "retrievegan.commands.training",
    "sample": "retrievegan.commands.training",
    "gcn-features": "retrievegan.commands.training",
    "box-l1": "retrievegan.commands.training",
    "progress-figure": "retrievegan.commands.training",
    "pretrain-damsm": "retrievegan.commands.damsm",
    "study-trials": "retrievegan.commands.study",
    "study-simulate": "retrievegan.commands.study",
    "study-export": "retrievegan.commands.study",
    "study-report": "retrievegan.commands.study",
    "study-serve": "retrievegan.commands.study",
    "study-links": "retrievegan.commands.study",
    "synthnet": "retrievegan.commands.evaluate",
    "real-stats": "retrievegan.commands.evaluate",
    "real-metrics": "retrievegan.commands.evaluate",
    "metrics": "retrievegan.commands.evaluate",
    "compatibility": "retrievegan.commands.evaluate",
    "compat-summary": "retrievegan.commands.evaluate",
    "group-mass": "retrievegan.commands.evaluate",
    "compat-trace": "retrievegan.commands.evaluate",
    "d-probe": "retrievegan.commands.evaluate",
    "c1-controls": "retrievegan.commands.evaluate",
    "c1-mechanism": "retrievegan.commands.evaluate",
    "claims": "retrievegan.commands.claims",
    "headline": "retrievegan.commands.claims",
    "tables": "retrievegan.commands.report",
    "figure-qualitative": "retrievegan.commands.report",
    "figure-compatibility": "retrievegan.commands.report",
    "figure-losses": "retrievegan.commands.report",
    "report": "retrievegan.commands.report",
    "paper-estimate": "retrievegan.commands.estimate",
    "rarity": "retrievegan.commands.rarity",
    "rarity-experiment": "retrievegan.commands.rarity",
    "verify": "retrievegan.commands.verify",
}

HELP: dict[str, str] = {
    "synth": "write the embedded synthetic benchmark in COCO-Stuff and Visual Genome formats",
    "preprocess": "raw COCO-Stuff / Visual Genome -> canonical scene graphs, resized images, stats",
    "dataset-table": "merge preprocess stats into the dataset table (Train/Val/Test/#Category/#Patches)",
    "patches": "crop the patch bank at ground-truth boxes",
    "category-cnn": "train the small patch CNN on category labels (the default frozen patch-feature backbone)",
    "patch-features": "frozen multi-scale CNN features of every bank patch (input of the patch embedding E_p)",
    "cooccur": "train the co-occurrence embedding F_occur (triplets: same image vs. other image), recall@k",
    "prefilter": "k nearest same-category training patches per object by GCN-feature L2 distance",
    "train": "train a registered method (checkpoint/resume, AMP, DDP under torchrun)",
    "sample": "two samples per test scene graph of a trained method in one setting (pred_bbox / gt_bbox)",
    "gcn-features": "graph-convolution features of a trained sg2im for every patch-bank object (pre-filtering)",
    "box-l1": "box regression L1 of a trained method vs. mean-box baselines",
    "progress-figure": "grid of a method's samples over training, from its generator snapshots",
    "pretrain-damsm": "pre-train AttnGAN's DAMSM text + image encoders on the scene-graph sentences",
    "study-trials": "user study: build the trial bundle (pairs vs. the reference, catch items) from retrievals",
    "study-simulate": "user study: simulated participants on the synthetic benchmark (labelled simulated)",
    "study-export": "user study: export the stored responses of a study database as CSV",
    "study-report": "user study: preference shares, intervals, tests, biases, exclusions, figure",
    "study-serve": "user study: check bundle, consent, secrets and database, then serve the app (Streamlit)",
    "study-links": "user study: signed participant links (HMAC of the id under link_secret)",
    "synthnet": "train the embedded benchmark's evaluation network (theme + category classifier) for torch-fidelity",
    "real-stats": "FID statistics and IS features of a real split, stored in a declared .npz",
    "real-metrics": "the real-data row (IS of the real test split, FID test vs. another real split)",
    "metrics": "FID / IS (torch-fidelity) and DS (LPIPS sample0 vs sample1) of one sample folder",
    "compatibility": "share of retrieved patch sets from one theme, pairwise same-theme rate, bootstrap interval",
    "compat-summary": "print (and write) the compatibility scores of several runs beside random choice among the "
                      "same pre-filter candidates and the chance level",
    "group-mass": "how often eq. 4's literal relaxation (retrieval mode relaxed) puts > 1 unit of mass on a group",
    "compat-trace": "compatibility of a RetrieveGAN run's retrievals at every generator snapshot (E_p over training)",
    "d-probe": "does a trained patch method's discriminator see compatibility? AUC of same- vs mixed-theme composites",
    "c1-controls": "claim C1's controls: fixed patch embeddings at a val-tuned scale vs the learned E_p, scored on test",
    "c1-mechanism": "claim C1's positive control: E_p trained through the retrieval by a frozen compatibility critic",
    "claims": "the paper's claims C1-C6: values per arm over training seeds, paired differences, verdicts",
    "headline": "README headline figures from the stored reference run's metric files (write or check)",
    "tables": "Table 1, Table 2, dataset and compatibility tables (CSV, Markdown, LaTeX) with the paper's values",
    "figure-qualitative": "scene graph, real image, samples and retrieved patches with their source images",
    "figure-compatibility": "bar chart of the compatibility score with bootstrap intervals",
    "figure-losses": "training-loss curves of one method from its losses.jsonl",
    "report": "REPORT.md linking tables and figures and stating what is comparable to the paper",
    "paper-estimate": "projected GPU-hours of the paper's Tables 1 and 2 from FLOPs and timed CPU steps at paper scale",
    "rarity": "appearance-rarity scores of the training images (conditional IMLE supplement): per-category colour KDE",
    "rarity-experiment": "table + figure: diversity of sg2im / RetrieveGAN with and without rarity rebalancing",
    "verify": "hash every output and compare it with the reference run in dvc.lock, stage by stage (numeric "
              "differences of metrics and tables; exit status 0 only when reproduced)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrievegan", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="disable progress bars")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(name, help=HELP.get(name, ""), description=HELP.get(name, ""),
                                      parents=[common])
        module.configure(name, stage_parser)
        stage_parser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        status = module.run(args.stage, args)  # None: success; a stage with a verdict returns its exit status
    except (InputError, ConfigError) as exc:
        print(f"retrievegan {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
