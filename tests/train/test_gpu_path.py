"""The GPU path, checked on the CPU (issue 13): every method at the paper configs' shapes trains one step under
bf16 autocast, with at most two host synchronisations; every network compiles without a graph break; fp16 with
grad scalers; non-finite losses skipped without a host synchronisation (fused Adam); the measured estimate.

Counting (``retrievegan.train.stepcount``): what a step would make the host wait for on a GPU, counted on the CPU
(``.item()``, ``bool(t)``, data-dependent shapes, host reads of device tensors, blocking host -> device copies).
The CUDA ground truth (``torch.cuda.set_sync_debug_mode``) runs in ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from retrievegan.estimate.paper import paper_data
from retrievegan.runs import METHODS
from retrievegan.train.cuda_autocast import cpu_autocast_with_cuda_casts, emulate_cuda_autocast
from retrievegan.train.loop import Trainer
from retrievegan.train.stepcount import count_ops, module_tensors

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "config/config.yaml"
PAPER = ROOT / "config/paper-coco.yaml"
STATS = ROOT / "config/reference/dataset_stats.csv"
ALL = tuple(METHODS)
# every method at its config + the other retrieval modes (retrieval.mode), with and without L_gt / L_occur
CASES = ALL + tuple(
    f"{name}:{mode}" for name in ("retrievegan", "retrievegan_no_gt_no_occur") for mode in ("soft", "relaxed")
)
MAX_SYNCS = 2  # issue 13: at most two host synchronisations per training step


def _cpu_config(data, name: str, **overrides):
    return data.train_config(name, device="cpu", batch_size=2, num_workers=0, deterministic=False, **overrides)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """Two synthetic scene graphs drawn like COCO-Stuff, the inputs at paper dimensions (sparse files)."""
    return paper_data(BASE, PAPER, STATS, tmp_path_factory.mktemp("paper"), count=2, methods=ALL)


def _method(data, case: str):
    """The method of a test case ``name`` or ``name:retrieval mode``."""
    name, _, mode = case.partition(":")
    return data.method(name, {"retrieval": {**data.config["retrieval"], "mode": mode}} if mode else None)[0], name


def _finite_logs(logs) -> dict[str, float]:
    """The step's logged losses (G and D phases) by name, asserted present and finite."""
    values = {f"{phase}/{k}": float(v) for phase in ("G", "D") for k, v in logs[phase].items()}
    assert values and all(math.isfinite(v) for v in values.values()), values
    return values


@pytest.fixture(scope="module")
def bf16_steps(paper):
    """One bf16-autocast training step per case at the paper configs' widths and 128 px (batch 2), counted;
    Adam fused as on CUDA. Computed on first use, kept for the module."""
    cache: dict[str, tuple] = {}

    def step(case: str):
        if case not in cache:
            method, name = _method(paper, case)
            trainer = Trainer(
                method, _cpu_config(paper, name, amp=True, amp_dtype="bfloat16", adam="fused"), torch.device("cpu")
            )
            batch, ctx = trainer.prepare(paper.batch(2), 0, 0)
            logs, counts = count_ops(
                lambda: trainer.step(batch, ctx), batch.tensors() + module_tensors(trainer.nets.values())
            )
            trainer.check_finite()
            cache[case] = (logs, counts, trainer)
        return cache[case]

    return step


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_every_method_trains_a_step_under_bf16_autocast_at_paper_shapes(bf16_steps, name):
    logs, _, trainer = bf16_steps(name)
    _finite_logs(logs)
    assert int(logs["skipped"]) == 0
    for opt in trainer.optimizers.values():  # every optimiser took its step
        assert all(int(state["step"]) == 1 for state in opt.state.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_at_most_two_host_synchronisations_per_step(bf16_steps, name):
    _, counts, _ = bf16_steps(name)
    assert counts.syncs <= MAX_SYNCS, counts.summary()


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_every_method_trains_a_step_under_cuda_autocast_casts_emulated_on_the_cpu(paper, name):
    """Goal 1 with CUDA's autocast policy instead of the CPU's (which casts other ops and missed the issue's
    PasteGAN / RetrieveGAN ``index_add_`` crash): one logged bf16 step at the paper shapes, no dtype error, finite."""
    method, base = _method(paper, name)
    trainer = Trainer(
        method, _cpu_config(paper, base, amp=True, amp_dtype="bfloat16", adam="fused", log_every=1), torch.device("cpu")
    )
    emulate_cuda_autocast(trainer)
    batch, ctx = trainer.prepare(paper.batch(2), 0, 0)
    logs = trainer.step(batch, ctx)
    trainer.check_finite()
    _finite_logs(logs)


def test_the_emulated_cuda_policy_raises_the_issues_fuser_error_that_cpu_autocast_misses():
    """The fuser's line before the fix, in miniature: a float32 softmax weighting a convolution's output, added into
    a buffer made like the canvas (grid_sample of low-precision features and a grid cast to their dtype). CPU
    autocast runs it; CUDA's policy raises the error issue 13 reported from the GPU."""
    conv = torch.nn.Conv2d(4, 4, 1)
    feats, grid = torch.randn(3, 4, 5, 5), torch.rand(3, 5, 5, 2) * 2 - 1
    scores, img = torch.randn(2, 1, 5, 5), torch.tensor([0, 0])

    def fuse():
        u = conv(feats)  # low precision under either autocast
        canvas = torch.nn.functional.grid_sample(u, grid.to(u.dtype), align_corners=False)[2:]
        contrib = torch.softmax(scores, dim=0) * conv(feats[:2])
        return canvas.new_zeros(canvas.shape).index_add(0, img, contrib)

    with torch.autocast("cpu", dtype=torch.bfloat16):  # the CPU's policy runs grid_sample in float32: no mismatch
        assert fuse().dtype == torch.float32
    issue_error = r"index_add_\(\): self \(BFloat16\) and source \(Float\)"
    with cpu_autocast_with_cuda_casts(torch.bfloat16), pytest.raises(RuntimeError, match=issue_error):
        fuse()


def test_the_emulated_cuda_policy_casts_as_cuda_autocast_does():
    x32, w32 = torch.randn(2, 3), torch.randn(4, 3)
    with cpu_autocast_with_cuda_casts(torch.bfloat16):
        low = torch.nn.functional.linear(x32, w32)  # lower precision
        assert low.dtype == torch.bfloat16
        assert torch.softmax(low, 1).dtype == torch.float32 and low.sum().dtype == torch.float32  # float32
        assert low.exp().dtype == torch.float32 and (low**2).dtype == torch.float32
        assert torch.addcmul(x32[:, :1], low[:, :1], x32[:, :1]).dtype == torch.float32  # promoted to the widest
        assert (low * x32[:, :1]).dtype == torch.float32  # other ops: PyTorch's own type promotion
        lstm = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        assert lstm(x32[:, None])[0].dtype == torch.float16  # cuDNN's RNN cast: float16 whatever the dtype
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            torch.nn.functional.binary_cross_entropy(torch.sigmoid(low), torch.ones(2, 4))
        with torch.autocast("cpu", enabled=False):  # an autocast-off region: no casts (layout2im's spectral norm)
            assert torch.nn.functional.linear(x32, w32).dtype == torch.float32
            assert torch.softmax(low, 1).dtype == torch.bfloat16
    assert torch.softmax(low, 1).dtype == torch.bfloat16  # outside: nothing


def _poison(method, hook: str, factor: float) -> None:
    """Make the method's ``hook`` (generator_step / discriminator_step) return its loss times ``factor``."""
    original = getattr(method, hook)

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        out.loss = out.loss * factor
        return out

    setattr(method, hook, poisoned)


def test_a_device_tensor_made_from_a_list_in_step_code_is_a_synchronisation():
    """``device_tensor.new_tensor(list)`` in package code copies host data and waits for it (a GPU stall per call):
    counted (the fuser made an image node's box so at every call). AttnGAN's ImageNet constants are made with a
    non-blocking copy (``imagenet_stats``), once per run in training, and give the same images."""
    import retrievegan
    from retrievegan.models.damsm import imagenet_stats, to_imagenet_normalized, to_tanh_range

    images = torch.rand(2, 3, 4, 4) * 2 - 1
    # a call site inside the package (host -> device copies are counted there only)
    site = compile(
        "made = images.new_tensor([0.0, 1.0]) + images.new_tensor([2.0], device=images.device)",
        str(Path(retrievegan.__file__).parent / "models" / "probe.py"),
        "exec",
    )
    _, counts = count_ops(lambda: exec(site, {"images": images}), [images])
    assert counts.syncs == 2 and all("new_tensor" in key for key in counts.sync_sites), counts.sync_sites
    _, counts = count_ops(lambda: images.new_tensor([0.0, 1.0]), [images])  # test code: not counted
    assert counts.syncs == 0
    stats = imagenet_stats(images.device, images.dtype)
    passed_on, counts = count_ops(lambda: to_tanh_range(to_imagenet_normalized(images, stats), stats), [images, *stats])
    assert counts.syncs == 0, counts.sync_sites
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(passed_on, (((images + 1) / 2 - mean) / std * std + mean) * 2 - 1)
    assert torch.equal(to_imagenet_normalized(images, stats), ((images + 1) / 2 - mean) / std)


def test_fused_adam_skips_a_nonfinite_update_on_the_device(embedded):
    """sg2im's rule: a non-finite generator loss skips both updates. With fused Adam the flags reach the kernels
    on the device (no synchronisation in the step); the loop reads them when it logs."""
    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im", adam="fused"), torch.device("cpu"))
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    trainer.step(batch, ctx)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in trainer.nets.items()}
    steps = {n: [int(s["step"]) for s in opt.state.values()] for n, opt in trainer.optimizers.items()}
    _poison(method, "generator_step", float("nan"))
    logs, counts = count_ops(lambda: trainer.step(batch, ctx), batch.tensors() + module_tensors(trainer.nets.values()))
    assert counts.syncs == 0, counts.summary()
    assert int(logs["skipped"]) == 1
    for name, net in trainer.nets.items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
        assert [int(s["step"]) for s in trainer.optimizers[name].state.values()] == steps[name]
    trainer.check_finite()  # skip_nonfinite (default): no error
    strict = Trainer(method, _cpu_config(embedded, "sg2im", adam="fused", skip_nonfinite=False), torch.device("cpu"))
    strict.step(*strict.prepare(embedded.batch(2), 0, 0))
    with pytest.raises(FloatingPointError):
        strict.check_finite()


def test_foreach_adam_skips_with_one_synchronisation(embedded):
    """The CPU default (foreach Adam, the for-loop's numbers): one host read of the flags per step."""
    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im"), torch.device("cpu"))
    assert trainer.adam == "foreach" and not trainer.device_skip
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    trainer.step(batch, ctx)
    _, counts = count_ops(lambda: trainer.step(batch, ctx), batch.tensors() + module_tensors(trainer.nets.values()))
    assert counts.syncs == 1, counts.summary()
    _poison(method, "discriminator_step", float("inf"))
    d_before = [p.detach().clone() for p in trainer.nets["d_img"].parameters()]
    g_before = [p.detach().clone() for p in trainer.nets["generator"].parameters()]
    logs = trainer.step(batch, ctx)
    assert logs["skipped"] == 0  # the generator update went through, the discriminator's did not
    assert all(torch.equal(a, b) for a, b in zip(d_before, trainer.nets["d_img"].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, trainer.nets["generator"].parameters()))


@pytest.mark.slow
def test_fp16_autocast_with_grad_scalers(embedded):
    """fp16 autocast (CPU autocast here) with a GradScaler per phase and fused Adam: the scalers' state advances,
    the losses are finite, the parameters move."""
    method, _ = embedded.method("sg2im")
    trainer = Trainer(
        method, _cpu_config(embedded, "sg2im", amp=True, amp_dtype="float16", adam="fused"), torch.device("cpu")
    )
    assert all(s.is_enabled() for s in trainer.scalers.values()) and not trainer.device_skip
    before = [p.detach().clone() for p in trainer.nets["generator"].parameters()]
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    scales = []
    for _ in range(6):  # a scaler starts at 2^16: the first steps may overflow in fp16, be skipped, halve the scale
        logs, counts = count_ops(
            lambda: trainer.step(batch, ctx), batch.tensors() + module_tensors(trainer.nets.values())
        )
        assert counts.syncs <= 1, counts.summary()  # the flags' read; the scalers' checks stay on the device
        assert all(math.isfinite(float(v)) for v in logs["G"].values())
        scales.append(float(trainer.scalers["generator"].get_scale()))
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.nets["generator"].parameters()))
    assert scales[-1] <= 2.0**16 and all(s > 0 for s in scales)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_every_method_trains_under_fp16_autocast_with_grad_scalers(embedded, name):
    """Goal 1's fp16 half on the CPU (CUDA runs it in benchmarks/gpu_check.sh): every method and retrieval mode, six
    steps under fp16 autocast with a GradScaler per phase and fused Adam (the scaled backward, the unscaled E_p trace
    of a logged RetrieveGAN step, the scalers' skip flags): no dtype error, finite losses, every trained network
    updated."""
    method, base = _method(embedded, name)
    trainer = Trainer(
        method,
        _cpu_config(embedded, base, amp=True, amp_dtype="float16", adam="fused", log_every=1),
        torch.device("cpu"),
    )
    assert all(s.is_enabled() for s in trainer.scalers.values())
    before = {
        name: [p.detach().clone() for p in net.parameters() if p.requires_grad] for name, net in trainer.nets.items()
    }
    for step in range(6):  # a scaler starts at 2^16: the first steps may overflow in fp16, be skipped, halve it
        batch, ctx = trainer.prepare(embedded.batch(2), step, 0)
        logs = trainer.step(batch, ctx)
        trainer.check_finite()
        _finite_logs(logs)
    moved = {
        name
        for name, params in before.items()
        if params
        and not all(
            torch.equal(a, b) for a, b in zip(params, (p for p in trainer.nets[name].parameters() if p.requires_grad))
        )
    }
    assert moved == {name for name, params in before.items() if params}  # every trained network was updated


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded config's methods on synthetic scene graphs (small: fast to trace)."""
    return paper_data(BASE, BASE, STATS, tmp_path_factory.mktemp("embedded"), count=2, methods=ALL)


def _network_calls(trainer: Trainer, batch, ctx) -> dict[str, tuple]:
    """The first (args, kwargs) each network is called with in one eager step (the methods' own calls)."""
    calls: dict[str, tuple] = {}
    handles = [
        net.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: calls.setdefault(name, (args, kwargs)) and None, with_kwargs=True
        )
        for name, net in trainer.nets.items()
    ]
    try:
        trainer.step(batch, ctx)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sg2im", "layout2im", "attngan", "pastegan", "retrievegan"])
def test_every_network_compiles_without_a_graph_break(embedded, name):
    """``torch._dynamo.explain`` of every network on the arguments its method calls it with."""
    import torch._dynamo

    method, _ = embedded.method(name)
    trainer = Trainer(method, _cpu_config(embedded, name), torch.device("cpu"))
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    breaks = {}
    for net_name, (args, kwargs) in _network_calls(trainer, batch, ctx).items():
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(trainer.nets[net_name])(*args, **kwargs)
        if explanation.graph_break_count:
            breaks[net_name] = [str(b.reason)[:300] for b in explanation.break_reasons]
    assert not breaks, json.dumps(breaks, indent=1)


def test_launch_counts_see_top_level_ops_views_and_compiled_kernels():
    """``count_launches`` (the profiler count that also sees compiled code): a composite op counts once (``linear``,
    not its ``t`` and ``addmm`` again), views and a reshape without a copy launch nothing, a reshape that copies
    does; compiled, the element-wise chain is one generated kernel."""
    from retrievegan.train.stepcount import count_launches

    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)

    def eager():
        y = torch.nn.functional.linear(x, w).relu()  # 2 launches
        return y.view(20).sum() + x.reshape(12).sum() + x.t().reshape(12).sum()  # 3 views, 1 copy, 3 sums, 2 adds

    _, counts = count_launches(eager)
    assert counts.aten == 11 and counts.views == 3 and counts.generated == 0, counts.by_name
    assert counts.by_name["aten::linear"] == 1 and "aten::addmm" not in counts.by_name
    assert counts.by_name["aten::reshape"] == 2 and counts.kernels == 8 and counts.launches == 11

    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        compiled = torch.compile(lambda a: (a * 2 + 1).relu().sum(), backend="inductor")
        compiled(x)  # compiles
        found, counts = count_launches(lambda: compiled(x))
    assert torch.equal(found, (x * 2 + 1).relu().sum())
    assert counts.generated == 1 and counts.kernels == counts.launches, counts.by_name


@pytest.mark.parametrize("mode", ["hard", "soft", "relaxed"])
def test_retrieval_loop_compiles_without_a_graph_break(mode):
    """RetrieveGAN's retrieval iterations (``retrieval_loop``, compiled under ``train.compile``): one graph, no
    break, and the same selection as the eager loop; the random draws stay outside it."""
    import torch._dynamo

    from retrievegan.models.retrieval import GroupCounts, draw_randomness, iterative_retrieval, retrieval_loop

    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 6, 8, generator=gen)
    mask = torch.rand(2, 4, 6, generator=gen) > 0.3
    mask[1, 2:] = False
    counts = GroupCounts.of(mask)
    _, noise = draw_randomness(torch.Generator().manual_seed(1), mask, features.dtype, counts)
    query = torch.randn(2, 8, generator=gen)
    args = (torch.where(mask[..., None], features, 0.0), mask, query, noise, 0.5, mode, True, True, counts.iterations)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(retrieval_loop)(*args)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    out = iterative_retrieval(features, mask, 0.5, mode, query=query, noise=noise, counts=counts)
    assert torch.equal(out.weights, retrieval_loop(*args)[0])


def test_damsm_matching_losses_compile_without_a_graph_break():
    """AttnGAN's DAMSM matching losses (compiled under ``train.compile``): one graph, no break."""
    import torch._dynamo

    from retrievegan.models.damsm import damsm_losses, identical_texts

    gen = torch.Generator().manual_seed(0)
    args = (
        torch.randn(3, 8, 4, 4, generator=gen),
        torch.randn(3, 8, generator=gen),
        torch.randn(3, 8, 5, generator=gen),
        torch.randn(3, 8, generator=gen),
        torch.tensor([5, 3, 4]),
        4.0,
        5.0,
        10.0,
        identical_texts(torch.tensor([[1, 2, 0], [1, 2, 0], [3, 4, 5]])),
    )
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(damsm_losses)(*args)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def test_adversarial_sum_compiles_without_a_graph_break():
    """AttnGAN's adversarial terms of a phase (``losses.weighted_bce_sum``, compiled under ``train.compile``): one
    graph, no break; the compiled sum is the eager one up to float rounding."""
    import torch._dynamo

    from retrievegan.train.losses import weighted_bce_sum

    gen = torch.Generator().manual_seed(0)
    args = (
        [torch.randn(3, generator=gen) for _ in range(5)],
        (1.0, 1.0, 0.0, 0.0, 0.0),
        (0.5, 0.5, 1 / 3, 1 / 3, 1 / 3),
    )
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(weighted_bce_sum)(*args)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    compiled_total, compiled_terms = torch.compile(weighted_bce_sum)(*args)
    total, terms = weighted_bce_sum(*args)
    torch.testing.assert_close(compiled_total, total)
    torch.testing.assert_close(compiled_terms, terms)


def test_attngan_kl_and_real_stages_compile_without_a_graph_break():
    """AttnGAN's KL term and its real images at every stage's size (compiled under ``train.compile``): one graph
    each, no break."""
    import torch._dynamo

    from retrievegan.models.baselines.attngan import kl_divergence, tanh_range_stages
    from retrievegan.models.damsm import imagenet_stats

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 16, 16, generator=gen)
    for function, args in (
        (kl_divergence, (torch.randn(2, 5, generator=gen), torch.randn(2, 5, generator=gen))),
        (tanh_range_stages, (images, imagenet_stats(images.device, images.dtype), (4, 8, 16))),
    ):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(function)(*args)
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


def _small_vgg():
    """A perceptual loss network of VGG-19's layer layout with 3-channel 1x1 convolutions (no weights file)."""
    from torch import nn

    from retrievegan.models.perceptual import VggPerceptualLoss

    layers = [nn.MaxPool2d(2) if i in (4, 9, 18, 27) else nn.Conv2d(3, 3, 1) for i in range(30)]
    return VggPerceptualLoss(nn.Sequential(*layers))


def test_perceptual_loss_compiles_without_a_graph_break():
    import torch._dynamo

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32, generator=gen), torch.randn(2, 3, 32, 32, generator=gen)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(_small_vgg())(x, y, torch.rand(2, 1, 32, 32, generator=gen))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


@pytest.mark.parametrize("compile", [False, True])
def test_the_perceptual_network_moves_once_and_compiles_under_compile(embedded, compile):
    """PasteGAN / RetrieveGAN: the perceptual loss's VGG-19 goes to the device once (not at every call: a
    ``Module.to`` walks every parameter) and, under ``train.compile``, is called compiled."""
    from torch._dynamo.eval_frame import OptimizedModule

    method, _ = embedded.method("pastegan")
    method._perceptual_net = net = _small_vgg()
    Trainer(method, _cpu_config(embedded, "pastegan", compile=compile), torch.device("cpu"))
    called = method.perceptual(torch.device("cpu"))
    assert method.perceptual(torch.device("cpu")) is called
    assert (called._orig_mod is net and isinstance(called, OptimizedModule)) if compile else called is net
    method._perceptual_net = other = _small_vgg()  # a replaced network (the estimate's random VGG) is used
    assert (
        method.perceptual(torch.device("cpu"))._orig_mod if compile else method.perceptual(torch.device("cpu"))
    ) is other
    Trainer(method, _cpu_config(embedded, "pastegan"), torch.device("cpu"))  # an eager trainer after it: eager
    assert method.perceptual(torch.device("cpu")) is other


def test_compiled_code_past_the_recompile_limit_is_an_error_not_eager():
    """Under ``compile_settings`` (every compiled step): dynamo's default of 8 graphs per function would run a 9th
    variant eager, silently (AttnGAN's three stage discriminators x three call variants at the paper's shapes);
    the loop allows ``COMPILE_RECOMPILE_LIMIT`` and fails past it."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from retrievegan.train.loop import COMPILE_RECOMPILE_LIMIT, compile_settings

    def scaled(x: torch.Tensor, key: str) -> torch.Tensor:
        return x * len(key)

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(scaled, backend="eager")
    x = torch.ones(2)
    keys = [chr(ord("a") + k) * (k + 1) for k in range(9)]  # nine constants: nine graphs
    assert COMPILE_RECOMPILE_LIMIT >= 9
    with compile_settings():
        for key in keys:
            assert torch.equal(compiled(x, key), x * len(key))
    assert counters["stats"]["unique_graphs"] == 9
    torch._dynamo.reset()
    with compile_settings(2), pytest.raises(Exception, match="(?i)recompile.?limit"):
        for key in keys[:3]:
            compiled(x, key)


def _float_sum(value) -> torch.Tensor:
    """Sum of every floating-point tensor in a (nested) network output."""
    if isinstance(value, torch.Tensor):
        return value.float().sum() if value.is_floating_point() else torch.zeros(())
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return sum((_float_sum(item) for item in items), torch.zeros(()))


@pytest.mark.slow
def test_the_compiled_patch_generator_keeps_one_graph_across_object_counts(tmp_path):
    """PasteGAN's (and RetrieveGAN's) compiled generator, forward and backward, on batches of three object counts:
    a static graph, then one dynamic in the object count that the third batch reuses. Inductor's layout
    optimisation (on for every convolution on the CPU) gave the backward's saved activations concrete strides and
    pinned the count: one graph per batch, then the recompile limit (``compile_settings`` turns it off)."""
    import torch._dynamo

    from retrievegan.train.loop import compile_settings

    data = paper_data(BASE, BASE, STATS, tmp_path, count=12, methods=("pastegan",))
    # the embedded generator with fewer layers (compiling is what takes the time); convolutions on the objects'
    # patches (their count dynamic) and on the images' canvases (static) as at every size
    method, _ = data.method(
        "pastegan", {"gconv_num_layers": 1, "refiner_layers": 1, "decoder_res_blocks": 0, "crop_encoder_arch": "C3-8-2"}
    )
    trainer = Trainer(method, _cpu_config(data, "pastegan"), torch.device("cpu"))
    calls: dict[int, tuple] = {}  # object count -> the generator's (args, kwargs), from the method's eager step
    for start in range(11):
        batch = data.batch(2, start=start)
        # counts inside one range of the CPU kernels' size guards (mkldnn convolutions: 4-15 objects; inductor's
        # reductions: 17-4096 triples): crossing one is a further graph (bounded: once per range)
        if 4 <= batch.objs.shape[0] <= 15 and batch.triples.shape[0] >= 17 and batch.objs.shape[0] not in calls:
            calls[batch.objs.shape[0]] = _network_calls(trainer, *trainer.prepare(batch, start, 0))["generator"]
    assert len(calls) >= 3, sorted(calls)
    generator = trainer.nets["generator"]
    torch._dynamo.reset()
    compiled = torch.compile(generator)
    with compile_settings(2):  # a third graph is an error
        for args, kwargs in list(calls.values())[:3]:
            generator.zero_grad(set_to_none=True)
            _float_sum(compiled(*args, **kwargs)).backward()
            assert all(p.grad is not None for p in generator.crop_encoder.parameters())
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "name, attribute",
    [
        ("retrievegan", "retrieval_loop"),
        ("attngan", "matching_losses"),
        ("attngan", "adversarial_sum"),
        ("attngan", "kl_loss"),
        ("attngan", "real_stages_of"),
    ],
)
def test_compile_hands_the_method_its_compiled_step_functions(embedded, name, attribute):
    """``train.compile`` compiles the method's own step functions (``Method.compile_functions``): RetrieveGAN's
    retrieval iterations, AttnGAN's DAMSM matching losses and adversarial sums; eager training keeps the plain
    functions, also on a method a compiled trainer had (the estimate measures its modes on one method)."""
    from retrievegan.models.baselines.attngan import kl_divergence, tanh_range_stages
    from retrievegan.models.damsm import damsm_losses
    from retrievegan.models.retrieval import retrieval_loop
    from retrievegan.train.losses import weighted_bce_sum

    function = {
        "retrieval_loop": retrieval_loop,
        "matching_losses": damsm_losses,
        "adversarial_sum": weighted_bce_sum,
        "kl_loss": kl_divergence,
        "real_stages_of": tanh_range_stages,
    }[attribute]
    method, _ = embedded.method(name)
    Trainer(method, _cpu_config(embedded, name), torch.device("cpu"))
    assert getattr(method, attribute) is function
    Trainer(method, _cpu_config(embedded, name, compile=True), torch.device("cpu"))
    compiled = getattr(method, attribute)
    assert compiled is not function and compiled.__wrapped__ is function
    Trainer(method, _cpu_config(embedded, name), torch.device("cpu"))
    assert getattr(method, attribute) is function


def test_patch_bank_paths_give_the_same_values(tmp_path):
    """Small banks: normalised once (cache); large ones: uint8 pixels gathered on the device and normalised as
    gathered, or (a GPU too small for them) read on the host per call. Same crops, same selections, same gradients."""
    import numpy as np

    from retrievegan.models.patch_method import PatchBank

    rng = np.random.default_rng(0)
    np.save(tmp_path / "patches.npy", rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8))
    ids = torch.tensor([[3, -1, 39], [0, 7, -1]])
    cand = torch.tensor(rng.integers(-1, 40, (2, 3, 5)))
    weights = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(1)) * (cand >= 0)
    results = []
    for path in ("cache", "device", "host"):
        bank = PatchBank(tmp_path / "patches.npy")
        bank._cache_ok = path == "cache"
        if path == "host":
            bank.device_pixels = lambda device: None
        w = weights.clone().requires_grad_(True)
        selected = bank.select(w, cand)
        (selected * torch.linspace(-1, 1, selected.numel()).view_as(selected)).sum().backward()
        results.append((bank.crops(ids), selected.detach(), w.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    assert torch.equal(results[0][0][0, 1], torch.zeros(3, 6, 6))  # -1: a zero patch


def test_patch_bank_select_is_sync_free_and_sums_like_the_nonzero_weights_only(tmp_path):
    """PatchBank.select without ``nonzero``: every weight is gathered (soft / relaxed weights), or, with ``column``,
    only the one nonzero weight of each object (a hard retrieval's one-hot forward pass). Both give bit for bit the
    sums over the nonzero weights only (the former forward pass) and the same gradients, with no host
    synchronisation in the forward or the backward pass, from the normalised cache and from the device pixels."""
    import numpy as np

    from retrievegan.models.patch_method import PatchBank

    rng = np.random.default_rng(3)
    np.save(tmp_path / "patches.npy", rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8))
    cand = torch.tensor(rng.integers(-1, 40, (2, 3, 5)))
    cand[1, 2] = -1  # an object without candidates
    gen = torch.Generator().manual_seed(2)
    soft = torch.softmax(torch.randn(2, 3, 5, generator=gen).masked_fill(cand < 0, float("-inf")), -1).nan_to_num(0.0)
    column = torch.where(cand[..., 0] >= 0, soft.argmax(-1), -1)
    hard = torch.zeros_like(soft).scatter(2, column.clamp(min=0)[..., None], 1.0) * (column >= 0)[..., None]
    target = torch.linspace(-1, 1, 2 * 3 * 3 * 36, dtype=torch.float32).view(2, 3, 3, 6, 6)
    for path in ("cache", "device"):
        bank = PatchBank(tmp_path / "patches.npy")
        bank._cache_ok = path == "cache"
        crops = bank.crops(cand).reshape(2 * 3 * 5, -1)
        grads = None  # the hard weights' gradient without the columns, to compare with the one with them
        for weights, col in ((soft, None), (hard, None), (hard, column)):
            flat = weights.reshape(-1)
            pos = torch.nonzero((flat != 0) & (cand.reshape(-1) >= 0)).squeeze(1)
            former = torch.zeros(6, crops.shape[1]).index_add_(0, pos // 5, flat[pos, None] * crops[pos])
            w = weights.clone().requires_grad_(True)
            out, counts = count_ops(
                lambda: bank.select(w, cand, col, sparse=False), [w, cand] + ([] if col is None else [col])
            )
            assert counts.syncs == 0, counts.summary()
            assert torch.equal(out.reshape(6, -1), former), (path, col is not None)
            assert torch.equal(bank.select(weights, cand, col).reshape(6, -1), former)  # the CPU default: sparse
            _, counts = count_ops(lambda: (out * target).sum().backward(), [w, cand, out, target])
            assert counts.syncs == 0, counts.summary()
            dense = (crops.view(2, 3, 5, -1) * target.reshape(2, 3, 1, -1)).sum(-1) * (cand >= 0)
            assert torch.allclose(w.grad, dense, atol=1e-5)
            if col is not None:
                assert torch.equal(w.grad, grads)  # the same gradient with and without the columns
            grads = w.grad


def test_compile_covers_the_networks_called_frozen_in_the_other_phase(embedded):
    """With ``compile``, a discriminator called in the generator's phase (frozen: its forward and the backward to
    the generator's outputs) runs compiled too, as in its own phase (the same compiled module without DDP); without
    ``compile`` both phases call the plain networks."""
    from torch._dynamo.eval_frame import OptimizedModule

    method, _ = embedded.method("layout2im")
    compiled = Trainer(method, _cpu_config(embedded, "layout2im", compile=True), torch.device("cpu"))
    for role in ("generator", "discriminator"):
        view = compiled._view(role)
        assert all(isinstance(view[name], OptimizedModule) for name in compiled.nets), role
        assert all(view[name]._orig_mod is compiled.nets[name] for name in compiled.nets)
    assert compiled._view("generator")["d_img"] is compiled._view("discriminator")["d_img"]
    plain = Trainer(method, _cpu_config(embedded, "layout2im"), torch.device("cpu"))
    assert all(
        plain._view(role)[name] is plain.nets[name] for role in ("generator", "discriminator") for name in plain.nets
    )


def test_channels_last_option_trains(embedded):
    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im", channels_last=True), torch.device("cpu"))
    conv = next(m for m in trainer.nets["generator"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    assert batch.images.is_contiguous(memory_format=torch.channels_last)
    logs = trainer.step(batch, ctx)
    assert all(math.isfinite(float(v)) for v in logs["G"].values()) and logs["skipped"] == 0
    # every gradient has its parameter's layout (autograd's contract for .grad; the fused Adam kernels expect it)
    for net in trainer.nets.values():
        for param in net.parameters():
            if param.grad is not None:
                assert all(g == p for g, p, n in zip(param.grad.stride(), param.stride(), param.shape) if n > 1)
    assert conv.weight.grad is not None and conv.weight.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "param, grad",
    [
        (torch.zeros(4, 3, 2, 2), torch.arange(48.0).view(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)),
        (torch.zeros(4, 3, 2, 2).contiguous(memory_format=torch.channels_last), torch.arange(48.0).view(4, 3, 2, 2)),
        (torch.zeros(4, 3).t(), torch.arange(12.0).view(3, 4)),
    ],
)
def test_a_gradient_in_another_layout_is_copied_into_the_parameters(param, grad):
    """What ``Trainer._backward`` sets as ``.grad`` when a (compiled) backward returns another layout: the
    parameter's strides (autograd's layout contract: fused Adam walks parameter and gradient alike), the values."""
    from retrievegan.train.loop import _in_layout_of, _same_layout

    assert not _same_layout(grad, param)
    copied = _in_layout_of(param, grad)
    assert copied.stride() == param.stride() and torch.equal(copied, grad)


def test_a_step_past_the_recompile_limit_stops_with_a_message_naming_the_cause(embedded, monkeypatch):
    """``Trainer.step`` under ``compile``: dynamo's limit error becomes one that names the method, the limit and
    what to do (train without ``train.compile``); nothing runs eager instead."""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im", compile=True), torch.device("cpu"))

    def past_the_limit(batch, ctx):
        raise FailOnRecompileLimitHit("recompile_limit reached")

    monkeypatch.setattr(trainer, "_step", past_the_limit)
    batch, ctx = trainer.prepare(embedded.batch(2), 0, 0)
    with pytest.raises(RuntimeError, match="sg2im needed more than 64 graphs.*Train without train.compile"):
        trainer.step(batch, ctx)


def test_compiled_steps_run_without_donated_buffers_and_under_the_recompile_limit(embedded, monkeypatch):
    """The settings a compiled step runs under, inside it only: no AOTAutograd donated buffers (they forbid the
    second backward that RetrieveGAN's E_p trace takes with ``retain_graph``; the crash itself was seen in a
    compiled training run, too slow to compile for a test), the recompile limit, failing past it, and no inductor
    layout optimisation (see the object-count test above)."""
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im", compile=True), torch.device("cpu"))
    seen = {}

    def record(batch, ctx):
        seen.update(
            donated=functorch_config.donated_buffer,
            limit=dynamo_config.recompile_limit,
            fail=dynamo_config.fail_on_recompile_limit_hit,
            layout=inductor_config.layout_optimization,
        )
        return {}

    monkeypatch.setattr(trainer, "_step", record)
    before = (functorch_config.donated_buffer, dynamo_config.recompile_limit, inductor_config.layout_optimization)
    trainer.step(*trainer.prepare(embedded.batch(2), 0, 0))
    assert seen == {"donated": False, "limit": 64, "fail": True, "layout": False}
    assert (
        functorch_config.donated_buffer,
        dynamo_config.recompile_limit,
        inductor_config.layout_optimization,
    ) == before


def test_emulated_cuda_autocast_follows_the_trainers_amp_switch(embedded):
    """``emulate_cuda_autocast`` keeps ``train.amp``: off, no casts at all; it is for a CPU trainer only."""
    method, _ = embedded.method("sg2im")
    trainer = Trainer(method, _cpu_config(embedded, "sg2im"), torch.device("cpu"))
    emulate_cuda_autocast(trainer)
    with trainer._autocast():
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.float32
    trainer.device = torch.device("cuda")
    with pytest.raises(ValueError, match="CPU trainer"):
        emulate_cuda_autocast(trainer)
