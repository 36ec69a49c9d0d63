"""The GPU checks of issue 13 in one run (``benchmarks/gpu_check.sh``): what the CPU test suite cannot show.

Runs with only the PyTorch stack (torch, numpy; torchvision for the paper configs' pretrained-network stand-ins):
no pytest, no PyYAML (the configs come from JSON snapshots when ``yaml`` is missing), no tqdm, no Snakemake.

Checks (each a row: pass / fail / skip with the reason, seconds, details):

* ``environment``: GPU, torch / CUDA / cuDNN versions; which optional packages exist; every method's module
  imports with what is installed (the training path needs no evaluation / study / workflow package);
* ``amp``: one training step of every method at the paper configs' shapes (batch 2) under bf16 and fp16 autocast
  (fp16 with grad scalers), RetrieveGAN also with the soft and relaxed retrieval modes, losses finite, the
  synchronising CUDA calls of the step counted by the CUDA runtime (``torch.cuda.set_sync_debug_mode``; target <= 2);
  on the CPU (dry run) CPU autocast with CUDA's casting policy emulated (``retrievegan.train.cuda_autocast``);
* ``compile``: ``torch.compile`` of sg2im and RetrieveGAN (mode ``default``) and layout2im (``reduce-overhead``: CUDA
  graphs, with ``batch_discriminator_calls``) on the embedded config, six steps on batches of different object
  counts, graph breaks counted (target 0), compiled graphs after each step (a count that grows at every new batch
  means a recompile per object count), compile time;
* ``resume``: ``retrievegan train`` killed (SIGKILL) and resumed on CUDA with ``deterministic: true`` against an
  uninterrupted run, and two uninterrupted runs against each other (bit-identical or the largest difference);
* ``ddp``: ``torchrun`` over NCCL with every GPU (needs >= 2; two ranks cannot share one GPU) against one process;
* ``estimate``: ``retrievegan paper-estimate --device cuda`` on config/paper-coco.yaml (Tables 1 + 2): real steps
  at the paper batch in fp32 / tf32 / bf16, GPU-hours from the measured medians -> ``<out>/gpu_estimate/``.

The checks run in the order environment, amp, resume, ddp, estimate, compile (compilation, the slowest, last).
Writes ``<out>/gpu_check.{json,md}`` (default ``results/benchmarks``) after every check (``info.finished``: how many
of the chosen checks ran; a run stopped by a time limit keeps the ones it finished). ``--device cpu --quick`` runs
the same code on the CPU with tiny settings (a dry run of the script itself; CUDA-only parts are skipped with the
reason).

    python -m benchmarks.gpu_check [--out DIR] [--only amp,estimate] [--quick] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a plain copy of the repository (no `pip install -e`)
    sys.path.insert(0, str(REPO / "src"))

# run in this order: compilation, the slowest and the most likely to fail on a new torch, last
CHECKS = ("environment", "amp", "resume", "ddp", "estimate", "compile")
OPTIONAL = (
    "yaml",
    "tqdm",
    "torchvision",
    "pandas",
    "scipy",
    "jsonschema",
    "snakemake",
    "pycocotools",
    "torch_fidelity",
    "lpips",
)
MAX_SYNCS = 2
SNAPSHOTS = REPO / "benchmarks/gpu_configs"
STATS = REPO / "config/reference/dataset_stats.csv"
TINY_SG2IM = {
    "embedding_dim": 16,
    "gconv_dim": 16,
    "gconv_hidden_dim": 32,
    "gconv_num_layers": 2,
    "refinement_dims": [16, 8],
    "layout_noise_dim": 2,
    "mask_size": 16,
    "eval_mode_after": -1,
    "d_img_arch": "C4-8-2,C4-16-2",
    "d_obj_arch": "C4-8-2,C4-16-2",
    "d_obj_fc_dim": 32,
    "crop_size": 16,
}


def has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def config_files() -> tuple[Path, Path, Path]:
    """(embedded config, paper-coco config, paper-vg config): the YAML files, or their JSON snapshots when PyYAML is
    missing (``python -m retrievegan.config export benchmarks/gpu_configs config/*.yaml`` makes them)."""
    if has("yaml"):
        return REPO / "config/config.yaml", REPO / "config/paper-coco.yaml", REPO / "config/paper-vg.yaml"
    return SNAPSHOTS / "config.json", SNAPSHOTS / "paper-coco.json", SNAPSHOTS / "paper-vg.json"


class Skip(Exception):
    """A check that cannot run here (the message says why)."""


class Context:
    def __init__(self, device: str, quick: bool, out: Path, work: Path):
        self.device, self.quick, self.out, self.work = device, quick, out, work

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def _syncs(ctx: Context, fn: Callable[[], Any]) -> tuple[Any, int | None]:
    if not ctx.cuda:
        return fn(), None
    from retrievegan.train.stepcount import cuda_sync_count

    result, count, _ = cuda_sync_count(fn)
    return result, count


# --- checks ------------------------------------------------------------------------------------------------------
def check_environment(ctx: Context) -> dict[str, Any]:
    import torch

    from retrievegan.device import describe
    from retrievegan.train.registry import METHODS, method_class

    info = describe(ctx.device)
    info["packages"] = {name: has(name) for name in OPTIONAL}
    failed = {}
    for name in METHODS:
        try:
            method_class(name)
        except Exception as exc:  # noqa: BLE001 - report every method that cannot be imported
            failed[name] = f"{type(exc).__name__}: {exc}"
    importlib.import_module("retrievegan.train.loop")
    info["methods_importable"] = sorted(set(METHODS) - set(failed))
    info["config_files"] = [str(p.relative_to(REPO)) for p in config_files()]
    if failed:
        raise AssertionError(f"methods that do not import: {failed}")
    if ctx.cuda and not torch.cuda.is_available():
        raise AssertionError("no CUDA device")
    return info


def _paper(ctx: Context, methods: tuple[str, ...], count: int, which: int = 1):
    from retrievegan.estimate.paper import paper_data

    base, coco, _ = config_files()
    paper = base if ctx.quick else coco
    return paper_data(base, paper if which else base, STATS, Path(tempfile.mkdtemp(dir=ctx.work)), count, methods)


def _needs_torchvision(data, name: str) -> str | None:
    """Why ``name`` cannot be built here (its config's pretrained-network stand-ins need torchvision), or None."""
    if has("torchvision"):
        return None
    section = data.config["retrievegan" if name.startswith("retrievegan") else name]
    if name == "attngan" and data.config["damsm"].get("image_encoder") == "inception":
        return "attngan: the DAMSM Inception-v3 stand-in needs torchvision"
    if section.get("p_img_weight", 0) or section.get("p_obj_weight", 0) or section.get("p_sel_weight", 0):
        return f"{name}: the VGG-19 perceptual-loss stand-in needs torchvision"
    return None


def check_amp(ctx: Context) -> dict[str, Any]:
    import torch

    from retrievegan.train.cuda_autocast import emulate_cuda_autocast
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import METHODS

    names = ("sg2im", "layout2im") if ctx.quick else tuple(METHODS)
    data = _paper(ctx, names, 2)
    device = torch.device(ctx.device)
    results, problems = {}, []
    modes = () if ctx.quick else ("soft", "relaxed")  # retrieval.mode: RetrieveGAN's other retrieval code paths
    for case in names + tuple(f"retrievegan:{mode}" for mode in modes):
        name, _, mode = case.partition(":")
        reason = _needs_torchvision(data, name)
        if reason:
            results[case] = {"skipped": reason}
            continue
        method, _ = data.method(name, {"retrieval": {**data.config["retrieval"], "mode": mode}} if mode else None)
        for dtype in ("bfloat16", "float16"):
            key = f"{case} {dtype}"
            cfg = data.train_config(
                name, device=ctx.device, batch_size=2, num_workers=0, amp=True, amp_dtype=dtype, deterministic=False
            )
            try:
                trainer = Trainer(method, cfg, device)
                if not ctx.cuda:  # the dry run: CPU autocast with CUDA's casts, to meet the GPU's dtype errors
                    emulate_cuda_autocast(trainer)
                trainer.train_step(data.batch(2), 0, 0)
                batch, step_ctx = trainer.prepare(data.batch(2), 1, 0)
                logs, syncs = _syncs(ctx, lambda t=trainer: t.step(batch, step_ctx))
                trainer.check_finite()
                values = [float(v) for phase in ("G", "D") for v in logs[phase].values()]
                finite = all(math.isfinite(v) for v in values)
                results[key] = {
                    "finite": finite,
                    "syncs_per_step": syncs,
                    "skipped_update": int(logs["skipped"]),
                    "casts": "cuda autocast" if ctx.cuda else "cuda autocast's, emulated on the cpu",
                }
                if not finite:
                    problems.append(f"{key}: non-finite loss")
                if syncs is not None and syncs > MAX_SYNCS:
                    problems.append(f"{key}: {syncs} synchronisations per step")
            except Exception as exc:  # noqa: BLE001 - a dtype error is exactly what this check reports
                results[key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                problems.append(f"{key}: {type(exc).__name__}")
            finally:
                with contextlib.suppress(NameError):
                    del trainer
                if ctx.cuda:
                    torch.cuda.empty_cache()
    if problems:
        raise AssertionError("; ".join(problems) + " | " + json.dumps(results))
    return results


def steps_on_new_batches(
    trainer, data, steps: int, progress: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """``steps`` training steps of ``trainer``, each on a new batch of 2 of ``data``'s scene graphs (another object
    count, as in training). Per step: its index and logs, the batch's objects and triples, dynamo's compiled graphs so far
    (every compiled function; a count growing at every batch is a recompile per object count), seconds."""
    import torch._dynamo

    rows = []
    for i in range(steps):
        batch = data.batch(2, 2 * i)
        start = time.perf_counter()
        logs = trainer.train_step(batch, i, 0)
        rows.append(
            {
                "step": i,
                "logs": logs,
                "objects": int(batch.objs.shape[0]),
                "triples": int(batch.triples.shape[0]),
                "graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
                "seconds": time.perf_counter() - start,
            }
        )
        if progress is not None:
            progress(rows[-1])
    return rows


def check_compile(ctx: Context) -> dict[str, Any]:
    import torch
    import torch._dynamo

    from retrievegan.train.loop import Trainer

    steps = 2 if ctx.quick else 6
    data = _paper(ctx, ("sg2im", "layout2im", "retrievegan"), 2 * steps, which=0)
    device = torch.device(ctx.device)
    modes = {"sg2im": "default", "layout2im": "reduce-overhead" if ctx.cuda else "default"}
    if not ctx.quick:
        modes["retrievegan"] = "default"
    # layout2im compiled: one D call per phase (with one call per input it trains compiled on the CPU, inductor,
    # torch 2.14; unchecked on CUDA: docs/notes/gpu-path.md).
    params = {"layout2im": {"batch_discriminator_calls": True}}
    results, problems = {}, []
    for name, mode in modes.items():
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        # one method's failure (an inductor error in one graph, say) is its row; the others still run, so that one
        # run on a GPU machine reports every method
        try:
            method, _ = data.method(name, params.get(name))
            cfg = data.train_config(
                name,
                device=ctx.device,
                batch_size=2,
                num_workers=0,
                compile=True,
                compile_mode=mode,
                deterministic=False,
            )
            trainer = Trainer(method, cfg, device)
            rows = steps_on_new_batches(trainer, data, steps)
            trainer.check_finite()
        except Exception as exc:  # noqa: BLE001 - a compilation error is exactly what this check reports
            results[name] = {"mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "where": _innermost(exc)}
            problems.append(f"{name}: {type(exc).__name__}")
            continue
        finally:
            with contextlib.suppress(NameError):
                del trainer
            if ctx.cuda:
                torch.cuda.empty_cache()
        breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
        finite = all(math.isfinite(float(v)) for v in rows[-1]["logs"]["G"].values())
        results[name] = {
            "mode": mode,
            "seconds_incl_compilation": round(sum(r["seconds"] for r in rows), 1),
            "graph_breaks": breaks,
            "finite": finite,
            "objects_per_step": [r["objects"] for r in rows],
            "graphs_after_step": [r["graphs"] for r in rows],
            "break_reasons": sorted(torch._dynamo.utils.counters["graph_break"])[:5],
        }
        if breaks or not finite:
            problems.append(f"{name}: {breaks} graph breaks, finite={finite}")
    if problems:
        raise AssertionError("; ".join(problems) + " | " + json.dumps(results))
    return results


def _innermost(exc: BaseException, frames: int = 3) -> list[str]:
    """The innermost ``frames`` frames of ``exc``'s traceback as "file:line in function" (for an error whose message
    says little, such as an assertion inside inductor's code generation)."""
    summary = traceback.extract_tb(exc.__traceback__)[-frames:]
    return [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in summary]


def _train_cmd(data_dir: Path, out: Path, train: dict[str, Any]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "retrievegan.cli",
        "train",
        "--no-progress",
        "--method",
        "sg2im",
        "--params",
        json.dumps(TINY_SG2IM),
        "--train-params",
        json.dumps(train),
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(out),
        "--resume",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def _states_differ(a: dict, b: dict) -> float:
    """Largest absolute difference between two nested states of tensors (0.0: bit-identical)."""
    import torch

    worst = 0.0
    if isinstance(a, dict):
        for key in a:
            worst = max(worst, _states_differ(a[key], b[key]))
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            worst = max(worst, _states_differ(x, y))
    elif isinstance(a, torch.Tensor):
        if not torch.equal(a, b):
            worst = max(worst, float((a.double() - b.double()).abs().max()) if a.is_floating_point() else math.inf)
    return worst


def check_resume(ctx: Context) -> dict[str, Any]:
    import warnings

    from retrievegan.estimate.paper import write_canonical
    from retrievegan.train import checkpoint as ckpt
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import train

    data = _paper(ctx, ("sg2im",), 24, which=0)
    data_dir = write_canonical(ctx.work / "resume_data", data)
    steps = 8
    cfg = {
        "seed": 0,
        "batch_size": 4,
        "steps": steps,
        "num_workers": 0,
        "checkpoint_every": 3,
        "snapshot_every": 0,
        "log_every": 1,
        "deterministic": True,
        "device": ctx.device,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [
            train("sg2im", TINY_SG2IM, TrainConfig(**cfg), data_dir, ctx.work / f"straight{i}", progress=False)
            for i in range(2)
        ]
    nondeterministic = sorted(
        {str(w.message).split(" does not have")[0][:120] for w in caught if "deterministic" in str(w.message)}
    )
    killed = ctx.work / "killed"
    proc = subprocess.Popen(
        _train_cmd(data_dir, killed, cfg), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            logged = killed.glob("state/*/losses.jsonl")
            if any(len(p.read_text().splitlines()) >= 4 for p in logged):
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
    if (killed / "checkpoint.pt").exists():
        raise AssertionError(f"the run finished before it was killed: {output[-500:]}")
    resumed = train("sg2im", TINY_SG2IM, TrainConfig(**cfg), data_dir, killed, resume=True, progress=False)
    payloads = [ckpt.load(r.checkpoint) for r in (*runs, resumed)]
    twice = max(_states_differ(payloads[0][k], payloads[1][k]) for k in ("networks", "optimizers"))
    resume = max(_states_differ(payloads[0][k], payloads[2][k]) for k in ("networks", "optimizers"))
    details = {
        "device": ctx.device,
        "resumed_from": resumed.resumed_from,
        "steps": steps,
        "two_uninterrupted_runs_max_difference": twice,
        "resumed_vs_uninterrupted_max_difference": resume,
        "nondeterministic_ops_warned": nondeterministic,
    }
    if resumed.resumed_from is None or twice or resume:
        raise AssertionError(json.dumps(details))
    return details


def check_ddp(ctx: Context) -> dict[str, Any]:
    import torch

    from retrievegan.estimate.paper import write_canonical
    from retrievegan.train import checkpoint as ckpt
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import train

    gpus = torch.cuda.device_count() if ctx.cuda else 0
    if gpus < 2:
        raise Skip(
            f"{gpus} GPU(s): DDP over NCCL needs >= 2 (two ranks cannot share one GPU); the CPU suite "
            "runs DDP over gloo (tests/train/test_train_ddp.py)"
        )
    data = _paper(ctx, ("sg2im",), 4 * gpus, which=0)
    data_dir = write_canonical(ctx.work / "ddp_data", data)
    params = {
        **TINY_SG2IM,
        "normalization": "none",
        "mask_normalization": "none",
        "d_normalization": "none",
        "bbox_weight": 0.0,
        "mask_weight": 0.0,
        "d_obj_weight": 0.0,
        "ac_weight": 0.0,
    }
    cfg = {
        "seed": 0,
        "batch_size": 2 * gpus,
        "steps": 2,
        "num_workers": 0,
        "checkpoint_every": 10,
        "snapshot_every": 0,
        "log_every": 1,
        "deterministic": False,
        "device": "cuda",
        "sync_batchnorm": False,
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={gpus}",
        "-m",
        "retrievegan.cli",
        "train",
        "--no-progress",
        "--method",
        "sg2im",
        "--params",
        json.dumps(params),
        "--train-params",
        json.dumps(cfg),
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(ctx.work / "ddp"),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise AssertionError(proc.stdout[-2000:] + proc.stderr[-2000:])
    single = train("sg2im", params, TrainConfig(**cfg), data_dir, ctx.work / "ddp_single", progress=False)
    a = ckpt.load(ctx.work / "ddp/checkpoint.pt")["networks"]
    b = ckpt.load(single.checkpoint)["networks"]
    worst = max(
        float((a[n][k].float() - v.float()).abs().max()) for n in b for k, v in b[n].items() if v.is_floating_point()
    )
    details = {"gpus": gpus, "backend": "nccl", "max_difference_vs_one_process": worst}
    if worst > 1e-3:
        raise AssertionError(json.dumps(details))
    return details


def check_estimate(ctx: Context) -> dict[str, Any]:
    from retrievegan.estimate import estimate_config, run_estimate

    if not has("torchvision"):
        raise Skip("the paper configs' stand-ins (ResNet feature width, VGG-19, Inception-v3) need torchvision")
    base, coco, _ = config_files()
    params: dict[str, Any] = {"device": ctx.device, "measured": True}
    if ctx.quick:
        params.update(
            methods=["sg2im", "layout2im"],
            modes=["fp32", "bf16"],
            measure_warmup_steps=1,
            measure_timed_steps=2,
            sampling=False,
            evaluation=False,
        )
    cfg = estimate_config(params)
    out = ctx.out / "gpu_estimate"
    result = run_estimate(
        cfg,
        base,
        [base if ctx.quick else coco],
        STATS,
        out,
        progress=lambda message: print(f"  estimate: {message}", flush=True),
    )
    both = result["totals"]["both"]
    rows = {
        r["method"]: {
            "fastest": r.get("measured_mode"),
            "s_per_step": r.get("measured_seconds_per_step"),
            "gpu_hours": r.get("measured_gpu_hours"),
        }
        for r in result["rows"]
        if r["kind"] in ("train", "damsm")
    }
    errors = {
        f"{r['method']} {m}": e["error"] for r in result["rows"] for m, e in r.get("measured", {}).items() if e["error"]
    }
    details = {
        "report": str(out / "paper_estimate.md"),
        "tables_1_2_training_hours": both["measured_gpu_hours_training"],
        "largest_run_hours": both["measured_gpu_hours_max"],
        "runs": rows,
        "mode_errors": errors,
    }
    if errors:
        raise AssertionError(json.dumps(details))
    return details


# --- runner ------------------------------------------------------------------------------------------------------
def render(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        "# GPU checks (issue 13)",
        "",
        f"{json.dumps(info)}",
        "",
        "| check | status | seconds | details |",
        "|---|---|---:|---|",
    ]
    for r in results:
        details = json.dumps(r.get("details", r.get("reason", "")))
        lines.append(f"| {r['check']} | {r['status']} | {r['seconds']:.1f} | {details[:1500].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "results/benchmarks"), help="folder for gpu_check.{json,md}")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run of the script")
    parser.add_argument("--quick", action="store_true", help="tiny settings (embedded shapes, two methods)")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    chosen = [c for c in args.only.split(",") if c]
    unknown = sorted(set(chosen) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    info: dict[str, Any] = {"device": args.device, "quick": args.quick}
    with contextlib.suppress(Exception):
        from retrievegan.device import describe

        info.update(describe(args.device))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(args.device, args.quick, out, Path(tmp))
        for name in CHECKS:
            if name not in chosen:
                continue
            print(f"[gpu_check] {name} ...", flush=True)
            t0 = time.perf_counter()
            record: dict[str, Any] = {"check": name}
            try:
                record.update(status="pass", details=globals()[f"check_{name}"](ctx))
            except Skip as exc:
                record.update(status="skip", reason=str(exc))
            except Exception as exc:  # noqa: BLE001 - every check reports; the exit status says if one failed
                record.update(
                    status="fail", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:]
                )
            record["seconds"] = round(time.perf_counter() - t0, 1)
            print(
                f"[gpu_check] {name}: {record['status']} ({record['seconds']} s) {record.get('reason', '')[:500]}",
                flush=True,
            )
            results.append(record)
            # after every check, so that a run stopped by a time limit keeps the checks it finished
            info.update(
                total_seconds=round(time.perf_counter() - start, 1), finished=f"{len(results)} of {len(chosen)} checks"
            )
            write_report(out, results, info)
    print(render(results, info))
    return 1 if any(r["status"] == "fail" for r in results) else 0


def write_report(out: Path, results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """``out``/gpu_check.{json,md}, each replaced whole (a temporary file, then ``os.replace``)."""
    from retrievegan import io

    io.write_text(out / "gpu_check.json", json.dumps({"info": info, "results": results}, indent=1, default=str) + "\n")
    io.write_text(out / "gpu_check.md", render(results, info))


if __name__ == "__main__":
    sys.exit(main())
