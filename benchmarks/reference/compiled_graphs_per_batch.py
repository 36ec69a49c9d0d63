"""Compiled graphs per training step when every batch has another number of objects (as in real training, unlike
the benchmarks that repeat one batch): ``Trainer.step`` under ``train.compile`` on ``--steps`` batches of 2
synthetic scene graphs, one markdown row per step with the batch's objects and triples, dynamo's compiled graphs so
far (all compiled functions of the method) and the step's seconds (compilation included).

A count that grows at every new batch is a recompile per object count; after the second batch (whose shapes
dynamo marks dynamic), further graphs should come only from host-side integers (layout2im's conv-LSTM steps,
RetrieveGAN's retrieval iterations) and, on the CPU, from kernel size thresholds.

    python benchmarks/reference/compiled_graphs_per_batch.py [--methods pastegan,retrievegan] [--steps 5]
        [--paper] [--device cpu]

About 2-5 minutes per method on 2 CPU cores at the embedded shapes (inductor compilation); ``TORCH_LOGS=recompiles``
names the guard behind each new graph.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sg2im,layout2im,attngan,pastegan,retrievegan")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--paper", action="store_true", help="config/paper-coco.yaml's shapes (default: embedded)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from benchmarks import gpu_check
    from retrievegan.train.loop import Trainer

    print("| method | step | objects | triples | graphs so far | seconds |\n|---|---:|---:|---:|---:|---:|")
    for name in args.methods.split(","):
        torch._dynamo.reset()
        counters.clear()
        with tempfile.TemporaryDirectory() as work:
            # gpu_check's data: the embedded config's shapes when ``quick``, else config/paper-coco.yaml's
            ctx = gpu_check.Context(args.device, not args.paper, Path(work) / "out", Path(work))
            data = gpu_check._paper(ctx, (name,), 2 * args.steps)
            method, _ = data.method(name)
            cfg = data.train_config(
                name, device=args.device, batch_size=2, num_workers=0, deterministic=False, compile=True
            )
            trainer = Trainer(method, cfg, torch.device(args.device))
            gpu_check.steps_on_new_batches(
                trainer,
                data,
                args.steps,
                lambda row: print(
                    f"| {name} | {row['step']} | {row['objects']} | {row['triples']} | {row['graphs']} | "
                    f"{row['seconds']:.0f} |",
                    flush=True,
                ),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
