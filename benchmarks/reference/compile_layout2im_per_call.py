"""layout2im compiled with one discriminator call per input (its default, ``batch_discriminator_calls: false``) against
eager: 2 training steps each on ``gpu_check``'s quick data (embedded shapes, batch 2), the discriminator losses of the
last step and the worst relative difference of each network's state (max |a - b| / max |a|). Exits 1 if the
compiled run fails (e.g. "modified by an inplace operation": a compiled graph that saved a spectral-norm buffer
which the next discriminator call updates before the backward pass).

    python benchmarks/reference/compile_layout2im_per_call.py [--device cuda] [--mode reduce-overhead]

About 2.5 minutes on 2 CPU cores (inductor compilation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="default", choices=("default", "reduce-overhead", "max-autotune"))
    args = parser.parse_args(argv)

    import torch

    from benchmarks import gpu_check
    from retrievegan.train.loop import Trainer

    with tempfile.TemporaryDirectory() as work:
        ctx = gpu_check.Context(args.device, True, Path(work) / "out", Path(work))
        data = gpu_check._paper(ctx, ("layout2im",), 4, which=0)
        runs = {}
        for compiled in (False, True):
            method, _ = data.method("layout2im", {"batch_discriminator_calls": False})
            cfg = data.train_config(
                "layout2im",
                device=args.device,
                batch_size=2,
                num_workers=0,
                compile=compiled,
                compile_mode=args.mode,
                deterministic=False,
            )
            trainer = Trainer(method, cfg, torch.device(args.device))
            try:
                logs = [trainer.train_step(data.batch(2, 2 * i), i, 0) for i in range(2)][-1]
            except RuntimeError as err:
                print(f"{'compiled' if compiled else 'eager'}: FAILED: {err}")
                return 1
            runs[compiled] = (
                {k: float(v) for k, v in logs["D"].items()},
                {
                    n: {k: v.detach().float().cpu() for k, v in net.state_dict().items()}
                    for n, net in trainer.nets.items()
                },
            )
    (eager_logs, eager), (comp_logs, comp) = runs[False], runs[True]
    for key, value in eager_logs.items():
        print(f"D {key:14s} eager {value:.8g}  compiled {comp_logs[key]:.8g}")
    for net, state in eager.items():
        worst = max(
            float((v - comp[net][k]).abs().max() / v.abs().max().clamp_min(1e-12))
            for k, v in state.items()
            if v.is_floating_point()
        )
        print(f"{net}: worst relative state difference after 2 steps {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
