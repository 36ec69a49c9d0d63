"""Count what a training step dispatches: aten ops (~ kernel launches on a GPU) and host synchronisations.

``count_ops(fn, device_tensors)`` runs ``fn()`` under a ``TorchDispatchMode`` and returns :class:`OpCounts`:

* ``ops``: every aten op that reaches the dispatcher's Python key (forward, autograd's backward ops, the
  optimiser), i.e. roughly one kernel launch each on a GPU;
* ``syncs``: the operations that make the host wait for the device on CUDA. Counted on any device (the
  point is to count them on the CPU, where no GPU is needed): ``aten._local_scalar_dense`` (``.item()``,
  ``bool(t)``, ``int(t)``, ``float(t)``), ops whose output shape depends on the data (``nonzero``,
  ``masked_select``, ``unique``, indexing / index assignment with a boolean mask, ``bincount``,
  ``repeat_interleave`` without ``output_size``, ``equal``), reading a device tensor on the host
  (``Tensor.tolist``, ``.numpy``, ``.cpu``, ``__array__``) and blocking copies of host data to the device
  (``Tensor.to(device)``, ``torch.tensor(..., device=)``, ``device_tensor.new_tensor(list)``). Only tensors
  that live "on the device" count: the ``device_tensors`` passed in (the batch after ``.to(device)``, the
  networks' parameters and buffers) and every tensor computed from them or made by a factory op (``zeros``,
  ``arange``, ``randn``: step code makes them on the device); tensors made from host data
  (``torch.tensor(python_list)``) and computed from those stay on the host, as on a GPU;
* ``sync_sites``: where each synchronisation happened (the innermost ``retrievegan`` source line), for
  finding and fixing them.

On a CUDA device, :func:`cuda_sync_count` is the ground truth (``torch.cuda.set_sync_debug_mode``).

``count_ops`` cannot see into ``torch.compile``'d code (under a ``TorchDispatchMode`` compiled code falls back to
eager). :func:`count_launches` counts what a step launches with or without compilation, from ``torch.profiler``:
the top-level aten ops (no aten op above them: what eager code and the compiled graphs' library calls such as
convolutions dispatch; the ops a composite op calls inside itself are not counted again) and the kernels inductor
generated (recorded when ``torch._inductor.config.cpp.enable_kernel_profile`` was set before compiling).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import sys
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])

# ops whose output shape (or returned Python value) depends on tensor data: a device -> host sync on CUDA
DATA_DEPENDENT = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::unique_dim_consecutive",
        "aten::bincount",
        "aten::equal",
        "aten::histc",
        "aten::_assert_scalar",
    }
)
HOST_READS = ("tolist", "numpy", "cpu", "__array__")
# ops that launch no kernel (views, detach, reading a scalar)
VIEW_OPS = frozenset(
    {
        "aten::view",
        "aten::t",
        "aten::slice",
        "aten::expand",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::select",
        "aten::detach",
        "aten::transpose",
        "aten::permute",
        "aten::_unsafe_view",
        "aten::alias",
        "aten::as_strided",
        "aten::unbind",
        "aten::split",
        "aten::unsafe_split",
        "aten::chunk",
        "aten::split_with_sizes",
        "aten::_reshape_alias",
        "aten::lift_fresh",
        "aten::_local_scalar_dense",
    }
)
# composite ops that are views unless they have to copy (then an aten op below them does)
MAYBE_VIEW_OPS = frozenset(
    {
        "aten::reshape",
        "aten::flatten",
        "aten::view_as",
        "aten::expand_as",
        "aten::narrow",
        "aten::contiguous",
        "aten::unflatten",
        "aten::movedim",
        "aten::numpy_T",
    }
)
# profiler names of kernels that torch.compile generated: inductor's C++ kernels ("graph_<n>_cpp_fused_...")
# and Triton kernels
GENERATED_KERNEL = re.compile(r"(^|_)(cpp_fused|triton_)")
# outputs that live on the host whatever the inputs' device (position in the op's output tuple)
HOST_OUTPUTS = {"aten::_pack_padded_sequence": (1,)}  # PackedSequence.batch_sizes is always a CPU tensor


@dataclasses.dataclass(frozen=True)
class OpCounts:
    """What one call dispatched (see the module docstring)."""

    ops: int
    syncs: int
    ops_by_name: dict[str, int]
    sync_sites: dict[str, int]  # "<op or Tensor.method> at <file>:<line>" -> count

    def summary(self, top: int = 10) -> str:
        sites = sorted(self.sync_sites.items(), key=lambda kv: -kv[1])[:top]
        return f"{self.ops} ops, {self.syncs} syncs" + "".join(f"\n  {n} x {s}" for s, n in sites)


def _site() -> str:
    """The innermost stack frame inside the retrievegan package (else the innermost frame of the caller)."""
    frames = traceback.extract_stack()[:-2]
    ours = [f for f in frames if f.filename.startswith(_PACKAGE_ROOT) and not f.filename.endswith("stepcount.py")]
    frame = ours[-1] if ours else frames[-1]
    path = frame.filename[len(_PACKAGE_ROOT) + 1 :] if frame.filename.startswith(_PACKAGE_ROOT) else frame.filename
    return f"{path}:{frame.lineno}"


def _is_bool_index(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype in (torch.bool, torch.uint8)


class _Tracker(TorchDispatchMode):
    def __init__(self, device_tensors: Iterable[torch.Tensor]):
        super().__init__()
        # id -> tensor, weakly: a dead tensor's id may be reused by a new (host) tensor
        self.device: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary(
            (id(t), t) for t in device_tensors
        )
        self.ops: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[str] = collections.Counter()

    def on_device(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and self.device.get(id(value)) is value

    def sync(self, what: str) -> None:
        self.sites[f"{what} at {_site()}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops[name] += 1
        flat, _ = tree_flatten((args, kwargs))
        device_input = any(self.on_device(v) for v in flat)
        if device_input:
            if name in DATA_DEPENDENT or (
                name == "aten::repeat_interleave"
                and kwargs.get("output_size") is None
                and isinstance(args[0], torch.Tensor)
                and len(args) < 3
            ):
                self.sync(name.removeprefix("aten::"))
            elif (
                name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_")
                and len(args) > 1
                and any(_is_bool_index(i) for i in (args[1] or ()))
            ):
                self.sync(f"{name.removeprefix('aten::')} with a boolean mask")
        out = func(*args, **kwargs)
        factory = not any(isinstance(v, torch.Tensor) for v in flat)
        if device_input or (factory and name != "aten::lift_fresh"):
            host = HOST_OUTPUTS.get(name, ())
            outputs = out if isinstance(out, (tuple, list)) else (out,)
            for position, item in enumerate(outputs):
                for value in tree_flatten(item)[0]:
                    if isinstance(value, torch.Tensor) and position not in host:
                        self.device[id(value)] = value
        return out


def _called_from_package() -> bool:
    """Whether the caller of the patched function (two frames up) is retrievegan code (host -> device copies
    are counted there only: torch's own, e.g. Adam's ``torch.tensor(1.0, device="cpu")``, are host-side)."""
    return sys._getframe(2).f_code.co_filename.startswith(_PACKAGE_ROOT)


def _moves_to_device(args: tuple, kwargs: dict) -> bool:
    """Whether ``Tensor.to(*args, **kwargs)`` names a device (``to(device)``, ``to("cuda")``, ``to(tensor)``)."""
    if kwargs.get("device") is not None:
        return True
    return any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args)


@contextlib.contextmanager
def _host_transfers(tracker: _Tracker) -> Iterator[None]:
    """Count transfers the dispatcher does not show on the CPU: ``Tensor.tolist / numpy / cpu / __array__`` of
    device tensors (device -> host), and ``Tensor.to(device)``, ``torch.tensor(..., device=)``,
    ``torch.as_tensor(..., device=)``, ``Tensor.new_tensor(host data)`` of a device tensor, without
    ``non_blocking`` (host -> device: PyTorch waits for the copy, i.e. for the device's queue)."""
    saved = {name: getattr(torch.Tensor, name) for name in (*HOST_READS, "to", "new_tensor")}
    factories = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

    def read(name: str, original: Callable) -> Callable:
        def method(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            if tracker.on_device(self):
                tracker.sync(f"Tensor.{name}")
            return original(self, *args, **kwargs)

        return method

    def to(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        out = saved["to"](self, *args, **kwargs)
        if not tracker.on_device(self) and _moves_to_device(args, kwargs) and _called_from_package():
            if not kwargs.get("non_blocking", False) and not (len(args) > 1 and args[1] is True):
                tracker.sync("Tensor.to(device) of host data")
            tracker.device[id(out)] = out
        return out

    def new_tensor(self, data, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        out = saved["new_tensor"](self, data, *args, **kwargs)
        to_device = kwargs.get("device") is not None or tracker.on_device(self)
        if to_device and not tracker.on_device(data) and _called_from_package():
            tracker.sync("Tensor.new_tensor(host data) on the device")
            tracker.device[id(out)] = out
        return out

    def factory(name: str, original: Callable) -> Callable:
        def make(data, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            out = original(data, *args, **kwargs)
            if kwargs.get("device") is not None and not tracker.on_device(data) and _called_from_package():
                tracker.sync(f"torch.{name}(host data, device=...)")
                tracker.device[id(out)] = out
            return out

        return make

    for name in HOST_READS:
        setattr(torch.Tensor, name, read(name, saved[name]))
    torch.Tensor.to = to
    torch.Tensor.new_tensor = new_tensor
    for name, original in factories.items():
        setattr(torch, name, factory(name, original))
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)
        for name, original in factories.items():
            setattr(torch, name, original)


def count_ops(fn: Callable[[], Any], device_tensors: Iterable[torch.Tensor] = ()) -> tuple[Any, OpCounts]:
    """``(fn(), OpCounts)``; ``device_tensors``: the tensors that live on the device when ``fn`` starts."""
    tracker = _Tracker(device_tensors)
    with _host_transfers(tracker), tracker:
        result = fn()
    return result, OpCounts(
        ops=sum(tracker.ops.values()),
        syncs=sum(tracker.sites.values()),
        ops_by_name=dict(tracker.ops),
        sync_sites=dict(tracker.sites),
    )


def module_tensors(modules: Iterable[torch.nn.Module]) -> list[torch.Tensor]:
    """Parameters and buffers of ``modules`` (device tensors for :func:`count_ops`)."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


def cuda_sync_count(fn: Callable[[], Any]) -> tuple[Any, int, list[str]]:
    """``(fn(), number of synchronising CUDA calls, their messages)`` from ``torch.cuda.set_sync_debug_mode``
    (CUDA only): what the CPU count approximates, measured by the CUDA runtime itself."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    messages = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    return result, len(messages), messages


@dataclasses.dataclass(frozen=True)
class LaunchCounts:
    """What one call launched (see the module docstring): ``aten`` top-level aten ops (``views`` of them launch
    no kernel), ``generated`` kernels of compiled code; ``by_name``: both, by profiler name."""

    aten: int
    views: int
    generated: int
    by_name: dict[str, int]

    @property
    def launches(self) -> int:
        """Top-level aten ops and generated kernels (views included, as ``OpCounts.ops``)."""
        return self.aten + self.generated

    @property
    def kernels(self) -> int:
        """Without the views: about the kernel launches on a GPU."""
        return self.aten - self.views + self.generated


def count_launches(fn: Callable[[], Any]) -> tuple[Any, LaunchCounts]:
    """``(fn(), LaunchCounts)`` from ``torch.profiler`` (CPU activity), eager or compiled code alike."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = fn()
    names: collections.Counter[str] = collections.Counter()
    aten = views = generated = 0
    for event in prof.events():
        name = event.name
        if name.startswith("aten::"):
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            if parent is None:
                names[name] += 1
                aten += 1
                views += _is_view(event)
        elif GENERATED_KERNEL.search(name):
            names[name] += 1
            generated += 1
    return result, LaunchCounts(aten=aten, views=views, generated=generated, by_name=dict(names))


def _is_view(event: Any) -> bool:
    """A profiler event of an aten op that launches no kernel: a view, or a composite op whose aten ops are."""
    if event.name in VIEW_OPS:
        return True
    return event.name in MAYBE_VIEW_OPS and all(
        _is_view(child) for child in event.cpu_children if child.name.startswith("aten::")
    )
