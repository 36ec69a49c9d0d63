"""Stages: category-cnn, patch-features, cooccur, prefilter (``retrievegan.embed``)."""

from __future__ import annotations

import argparse

from retrievegan.config import from_json


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the stage's config section")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    if stage == "category-cnn":
        parser.add_argument("--patches-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")
        parser.add_argument("--out-dir", required=True, help="folder for checkpoint.pt and run.json")
    elif stage == "patch-features":
        parser.add_argument("--patches-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")
        parser.add_argument("--out-dir", required=True,
                            help="folder for patch_features.npy and patch_features.run.json")
        parser.add_argument("--category-cnn", default=None, help="checkpoint of `retrievegan category-cnn` "
                                                                 "(backbone category_cnn)")
    elif stage == "cooccur":
        parser.add_argument("--patches-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")
        parser.add_argument("--model-dir", required=True, help="folder for checkpoint.pt and run.json")
        parser.add_argument("--embeddings", required=True, help="(P, E) float32 .npy of every bank patch")
        parser.add_argument("--metrics", required=True, help="same-image recall@k JSON")
    elif stage == "prefilter":
        parser.add_argument("--features", required=True, help="(P, D) GCN features .npy aligned with patches.csv")
        parser.add_argument("--patches-csv", required=True)
        parser.add_argument("--out-dir", required=True, help="folder for candidates.npy, distances.npy, run.json")
    else:
        raise ValueError(stage)


def run(stage: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    progress = not args.no_progress
    if stage == "category-cnn":
        from retrievegan import runinfo
        from retrievegan.embed.bank import load_bank
        from retrievegan.embed.features import FeaturesConfig, save_category_cnn, train_category_cnn

        cfg = from_json(FeaturesConfig, args.params, "features")
        bank, table = load_bank(args.patches_dir)
        model, record = train_category_cnn(bank, table, cfg, progress=progress)
        save_category_cnn(f"{args.out_dir}/checkpoint.pt", model, cfg, record)
        runinfo.write_run_json(args.out_dir, "category-cnn", cfg, cfg.seed,
                               {"patches_dir": args.patches_dir, **record})
        print(f"category CNN: {len(record['classes'])} categories, {record['train_patches']} train patches, "
              f"val accuracy {record.get('val_accuracy', float('nan')):.3f}")
    elif stage == "patch-features":
        from retrievegan.embed.features import FeaturesConfig, extract_patch_features

        cfg = from_json(FeaturesConfig, args.params, "features")
        extra = extract_patch_features(args.patches_dir, cfg, args.out_dir, category_cnn=args.category_cnn,
                                       progress=progress)
        probe = extra["probe"]
        line = f"patch features ({cfg.backbone}, {cfg.pooling}): {extra['shape'][0]} x {extra['shape'][1]}"
        if probe:
            line += f"; val 1-NN category accuracy {probe['category_1nn_accuracy']:.3f}"
            if "theme_10nn_precision" in probe:
                line += (f", theme 10-NN precision {probe['theme_10nn_precision']:.3f} "
                         f"(chance {probe['theme_chance']:.3f}; evaluation only)")
        print(line)
    elif stage == "cooccur":
        from retrievegan.embed.cooccur import CooccurConfig, train_cooccur

        cfg = from_json(CooccurConfig, args.params, "cooccur")
        metrics = train_cooccur(args.patches_dir, cfg, args.model_dir, args.embeddings, args.metrics,
                                progress=progress)
        print(f"co-occurrence embedding, same-image recall@k on {metrics['split']} "
              f"({metrics['queries']} patches, {metrics['images']} images):")
        for key in (k for k in metrics["trained"] if k.startswith("recall@")):
            print(f"  {key}: trained {metrics['trained'][key]:.3f}  untrained (random) "
                  f"{metrics['untrained'][key]:.3f}  chance {metrics['chance'][key]:.3f}")
    elif stage == "prefilter":
        from retrievegan.embed.prefilter import PrefilterConfig, run_prefilter

        cfg = from_json(PrefilterConfig, args.params, "prefilter")
        summary = run_prefilter(args.features, args.patches_csv, cfg, args.out_dir, progress=progress)
        print(f"prefilter: {summary['rows']} objects x k={summary['k']} candidates; "
              f"{summary['rows_with_padding']} rows padded, {summary['rows_without_candidates']} without candidates")
    else:
        raise ValueError(stage)
