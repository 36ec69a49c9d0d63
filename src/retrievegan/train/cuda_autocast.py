"""CUDA autocast's casting policy, emulated on the CPU: catch the dtype errors a GPU run would raise, without a GPU.

CPU autocast (``torch.autocast("cpu")``) and CUDA autocast cast different ops: CUDA runs ``softmax``, ``exp``,
``log``, ``sum``, ``pow``, up-sampling, norms and most losses in float32, convolutions / matrix products in the
low-precision dtype, and promotes mixed inputs of ``dot``, ``grid_sample``, ``index_put``, ``scatter_add`` (...) to
the widest, where CPU autocast leaves many of these alone. Code that mixes the two (a float32 softmax weighting a
bfloat16 convolution's output, then ``index_add`` into a bfloat16 buffer) passes under CPU autocast and fails on a
GPU (PasteGAN / RetrieveGAN met ``index_add_(): self (BFloat16) and source (Float) must have the same scalar type``
there, which a plain CPU bf16 test does not see; under this policy ``tests/train/test_gpu_path.py``'s emulated test
fails with that message).

:class:`CudaAutocastPolicy` is a ``TorchFunctionMode`` that applies CUDA's policy (the op lists of PyTorch's
``aten/src/ATen/autocast_mode.cpp`` for CUDA: lower precision, float32, promote to the widest input type, banned;
and cuDNN's RNNs, which run in float16 on a GPU whatever the autocast dtype) to Python-level calls (``torch.*``,
``torch.nn.functional.*``, tensor methods) while CPU autocast is enabled, and runs each call with CPU autocast off,
so that only CUDA's policy casts. An ``autocast(enabled=False)`` region (layout2im's spectral norm) turns it off as
it turns autocast off. It is an emulation at the Python API, not CUDA: it decides per Python call
(``F.interpolate``, not the aten op it dispatches), and it cannot see the kernels' own dtype support.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# CUDA autocast's lists (torch 2.x, aten/src/ATen/autocast_mode.cpp), as the Python names that reach them
LOWER_PRECISION = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "conv_tbc",
        "convolution",
        "_convolution",
        "prelu",
        "addmm",
        "addmv",
        "addr",
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "einsum",
        "mm",
        "mv",
        "linear",
        "addbmm",
        "baddbmm",
        "bmm",
        "chain_matmul",
        "multi_dot",
        "vecdot",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
        "scaled_dot_product_attention",
    }
)
FLOAT32 = frozenset(
    {
        "acos",
        "asin",
        "cosh",
        "erfinv",
        "exp",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "reciprocal",
        "rsqrt",
        "sinh",
        "tan",
        "pow",
        "__pow__",
        "__rpow__",
        "softplus",
        "layer_norm",
        "group_norm",
        "norm",
        "frobenius_norm",
        "nuclear_norm",
        "cosine_similarity",
        "poisson_nll_loss",
        "cosine_embedding_loss",
        "nll_loss",
        "cross_entropy",
        "hinge_embedding_loss",
        "kl_div",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "mse_loss",
        "margin_ranking_loss",
        "multilabel_margin_loss",
        "soft_margin_loss",
        "triplet_margin_loss",
        "multi_margin_loss",
        "binary_cross_entropy_with_logits",
        "dist",
        "pdist",
        "cdist",
        "renorm",
        "logsumexp",
        "interpolate",
        "upsample",
        "upsample_nearest",
        "upsample_bilinear",
        "prod",
        "cumprod",
        "cumsum",
        "softmax",
        "log_softmax",
        "sum",
        "vector_norm",
        "matrix_norm",
    }
)
PROMOTE = frozenset(
    {
        "addcdiv",
        "addcmul",
        "atan2",
        "bilinear",
        "cross",
        "dot",
        "vdot",
        "grid_sample",
        "grid_sampler",
        "index_put",
        "tensordot",
        "scatter_add",
    }
)
BANNED = frozenset({"binary_cross_entropy"})  # CUDA autocast raises: "unsafe to autocast"
# cuDNN's RNNs (``_cudnn_rnn``, aten/src/ATen/cudnn/AutocastRNN.cpp) cast input, states and weights to float16
# whatever autocast's dtype: an LSTM under bf16 autocast returns float16 on a GPU
CUDNN_RNN = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu"})
_LOW = (torch.bfloat16, torch.float16)


def _map(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    return value


def _floats(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _floats(v)]
    return []


class CudaAutocastPolicy(TorchFunctionMode):
    """``with torch.autocast("cpu", dtype), CudaAutocastPolicy(dtype):`` runs the enclosed code with CUDA
    autocast's casts instead of the CPU's (see the module docstring). ``dtype``: bfloat16 or float16."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if dtype not in _LOW:
            raise ValueError(f"autocast dtype must be bfloat16 or float16, got {dtype}")
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu"):  # outside autocast, or in an autocast(enabled=False) region
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in BANNED:
            raise RuntimeError(f"torch.nn.functional.{name} is unsafe to autocast (CUDA autocast refuses it)")
        cast: Callable[[torch.Tensor], torch.Tensor] | None = None
        if name in LOWER_PRECISION:
            cast = self._to(self.dtype)
        elif name in CUDNN_RNN:
            cast = self._to(torch.float16)
        elif name in FLOAT32:
            cast = self._to(torch.float32)
        elif name in PROMOTE:
            dtypes = {t.dtype for t in _floats((args, tuple(kwargs.values())))}
            if len(dtypes) > 1:
                cast = self._to(functools.reduce(torch.promote_types, dtypes))
        if cast is not None:
            args, kwargs = _map(args, cast), {k: _map(v, cast) for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False):
            return func(*args, **kwargs)

    @staticmethod
    def _to(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        def cast(t: torch.Tensor) -> torch.Tensor:
            # autocast casts floating tensors of the other float types only (never integers, bools, float64)
            return t.to(dtype) if t.dtype in (torch.float32, *_LOW) and t.dtype != dtype else t

        return cast


@contextlib.contextmanager
def cpu_autocast_with_cuda_casts(dtype: torch.dtype, enabled: bool = True) -> Iterator[None]:
    """``torch.autocast("cpu", dtype, enabled)`` whose casts are CUDA autocast's (:class:`CudaAutocastPolicy`)."""
    with torch.autocast("cpu", dtype=dtype, enabled=enabled), CudaAutocastPolicy(dtype):
        yield


def emulate_cuda_autocast(trainer: Any) -> None:
    """Make a CPU ``Trainer``'s autocast (``train.amp``) cast as CUDA autocast does: its steps then raise the dtype
    errors a GPU run would."""
    if trainer.device.type != "cpu":
        raise ValueError(f"emulating CUDA autocast is for a CPU trainer, not {trainer.device}")
    trainer._autocast = lambda: cpu_autocast_with_cuda_casts(trainer.amp_dtype, trainer.amp)
