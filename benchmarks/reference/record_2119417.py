"""How benchmarks/reference/*_2119417.json were recorded (run against a checkout of commit 2119417).

    git worktree add /tmp/base 2119417
    cp src/retrievegan/train/stepcount.py /tmp/base/src/retrievegan/train/   # today's counter, old code
    PYTHONPATH=/tmp/base/src python benchmarks/reference/record_2119417.py ops /tmp/base before_loop.json
    PYTHONPATH=/tmp/base/src python benchmarks/reference/record_2119417.py ops /tmp/base before_foreach.json foreach
    PYTHONPATH=/tmp/base/src python benchmarks/reference/record_2119417.py losses /tmp/base losses_paper.json paper
    PYTHONPATH=/tmp/base/src python benchmarks/reference/record_2119417.py losses /tmp/base losses_embedded.json embedded

then merged into step_ops_2119417.json (ops_loop, ops_foreach, syncs) and step_losses_2119417.json. The draws are
the ones ``benchmarks/bench_step_ops.py`` repeats (rng [0, 1234], DAMSM stand-in seed 0, VGG stand-in seed 1).

``benchmarks/reference/step_launches_2119417.json`` (``bench_compiled_ops.py``'s reference: the eager step with
its CUDA default, foreach Adam, counted by today's ``count_launches``):

    PYTHONPATH=/tmp/base/src python benchmarks/reference/record_2119417.py launches /tmp/base step_launches_2119417.json
"""
# ruff: noqa
import sys

MODE = sys.argv.pop(1)
if MODE in ("ops", "launches"):
    import json, os, tempfile
    from pathlib import Path
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    import numpy as np, torch
    torch.set_num_threads(1)
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    if MODE == "launches" or "foreach" in sys.argv[3:]:  # the old code on CUDA: torch's Adam defaults to foreach there
        Orig = torch.optim.Adam
        class Adam(Orig):
            def __init__(self, *a, **k): k.setdefault("foreach", True); super().__init__(*a, **k)
        torch.optim.Adam = Adam
    from retrievegan import estimate as est
    from retrievegan.config import from_mapping
    from retrievegan.data.dataset import collate_scene_graphs
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import create_method
    from retrievegan.train.stepcount import count_launches, count_ops, module_tensors
    names = ["sg2im", "layout2im", "attngan", "pastegan", "retrievegan", "retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only"]
    result = {"_about": "record_2119417.py launches: commit 2119417, eager, foreach Adam, batch 2, the third train_step on the first batch, 1 thread"} if MODE == "launches" else {}
    for which in ("paper", "embedded"):
        config = est.load_paper_config(root / "config/config.yaml", root / ("config/paper-coco.yaml" if which == "paper" else "config/config.yaml"))
        scale = est.dataset_scale(config, est.read_dataset_stats(root / "config/reference/dataset_stats.csv"), est.EstimateConfig())
        spec = est.synthetic_spec(scale); rng = np.random.default_rng([0, 1234]); items = est.synthetic_items(scale, spec, 4, rng)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp); inputs = est.write_inputs(tmp, config, scale, sum(int((i.objs != 0).sum()) for i in items), rng)
            inputs["damsm"] = tmp / "d.pt"; est.random_damsm(config, spec, torch.Generator().manual_seed(0), inputs["damsm"])
            for name in names:
                cfg = from_mapping(TrainConfig, {**est.train_params(config, name), "device": "cpu", "num_workers": 0, "batch_size": 2, "deterministic": False}, "train")
                m = create_method(name, est.method_params(config, name), spec, inputs); est.install_random_perceptual(m, torch.Generator().manual_seed(1))
                tr = Trainer(m, cfg, torch.device("cpu"))
                first = collate_scene_graphs(items[:2])
                tr.train_step(first, 0, 0)
                if MODE == "launches":  # the third step on the first batch
                    tr.train_step(first, 1, 0)
                    _, c = count_launches(lambda: tr.train_step(first, 2, 0))
                    result.setdefault(which, {})[name] = {"launches": c.launches, "kernels": c.kernels, "views": c.views}
                    print(which, name, c.launches, c.kernels, flush=True)
                    continue
                b = collate_scene_graphs(items[2:4])
                dev = module_tensors(tr.nets.values()) + [v for v in vars(b).values() if isinstance(v, torch.Tensor)]
                _, c = count_ops(lambda: tr.train_step(b, 1, 0), dev)
                # the old loop read the CPU batch's image ids (.tolist()) before moving it: host data, not a sync
                sites = {k: v for k, v in c.sync_sites.items() if k != "Tensor.tolist at train/loop.py:166"}
                result.setdefault(which, {})[name] = {"ops": c.ops, "syncs": sum(sites.values()), "sync_sites": sites}
                print(which, name, c.ops, sum(sites.values()), flush=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

else:

    import dataclasses
    import hashlib
    import json
    import sys
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import torch

    torch.set_num_threads(1)
    root, out_path, which = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    methods = sys.argv[4:] or ["sg2im", "layout2im", "attngan", "pastegan", "retrievegan", "retrievegan_no_gt_no_occur",
                               "retrievegan_gt_only", "retrievegan_occur_only"]

    from retrievegan import estimate as est
    from retrievegan.config import from_mapping
    from retrievegan.data.dataset import collate_scene_graphs
    from retrievegan.seeds import INIT, derive_seed
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import create_method

    try:
        from retrievegan.train.stepcount import count_ops, module_tensors
    except ImportError:
        count_ops = None

    base = root / "config/config.yaml"
    paper = root / ("config/paper-coco.yaml" if which == "paper" else "config/config.yaml")
    config = est.load_paper_config(base, paper)
    ecfg = est.EstimateConfig()
    stats = est.read_dataset_stats(root / "config/reference/dataset_stats.csv")
    scale = est.dataset_scale(config, stats, ecfg)
    spec = est.synthetic_spec(scale)
    B, STEPS = 2, 3
    rng = np.random.default_rng([0, 1234])
    items = est.synthetic_items(scale, spec, B * STEPS, rng)
    real_objects = sum(int((it.objs != 0).sum()) for it in items)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = est.write_inputs(tmp, config, scale, real_objects, rng)
        init = torch.Generator().manual_seed(0)
        inputs["damsm"] = tmp / "damsm.pt"
        est.random_damsm(config, spec, init, inputs["damsm"])
        for name in methods:
            t0 = time.time()
            train = {**est.train_params(config, name), "device": "cpu", "num_workers": 0, "batch_size": B,
                     "deterministic": True, "amp": False, "compile": False}
            cfg = from_mapping(TrainConfig, train, "train")
            obj = create_method(name, est.method_params(config, name), spec,
                                {k: v for k, v in inputs.items() if k in type(obj).required_inputs} if False else
                                {k: v for k, v in inputs.items()})
            est.install_random_perceptual(obj, torch.Generator().manual_seed(1))
            trainer = Trainer(obj, cfg, torch.device("cpu"))
            batches = [collate_scene_graphs(items[i * B:(i + 1) * B]) for i in range(STEPS)]
            logs, counts = [], None
            for step, batch in enumerate(batches):
                if step == 1 and count_ops is not None and hasattr(trainer, "prepare"):
                    b, ctx = trainer.prepare(batch, step, 0)
                    dev = module_tensors(trainer.nets.values()) + b.tensors()
                    out, c = count_ops(lambda: trainer.step(b, ctx), dev)
                    counts = {"ops": c.ops, "syncs": c.syncs, "sync_sites": c.sync_sites, "by_name": c.ops_by_name}
                elif step == 1 and count_ops is not None:
                    dev = module_tensors(trainer.nets.values()) + [v for v in vars(batch).values()
                                                                      if isinstance(v, torch.Tensor)]
                    out, c = count_ops(lambda: trainer.train_step(batch, step, 0), dev)
                    counts = {"ops": c.ops, "syncs": c.syncs, "sync_sites": c.sync_sites}
                else:
                    out = trainer.train_step(batch, step, 0)
                logs.append({ph: {k: float(v).hex() for k, v in out[ph].items()} for ph in ("G", "D")})
            h = hashlib.sha256()
            state = trainer.state()
            for net in sorted(state["networks"]):
                for k, v in sorted(state["networks"][net].items()):
                    h.update(f"{net}.{k}".encode())
                    h.update(v.detach().contiguous().cpu().numpy().tobytes())
            result[name] = {"logs": logs, "state_sha256": h.hexdigest(), "counts": counts,
                            "seconds": round(time.time() - t0, 1)}
            print(name, result[name]["seconds"], "s", counts and (counts["ops"], counts["syncs"]), flush=True)
    out_path.write_text(json.dumps(result, indent=1, sort_keys=True))

