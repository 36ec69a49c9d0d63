"""Progress bars: tqdm when it is installed, else a silent stand-in (the training path must run on a machine
that has only the PyTorch stack, e.g. a GPU node without the project's other requirements)."""

from __future__ import annotations

from typing import Any


class _Silent:
    """The part of tqdm's interface the stages use, doing nothing."""

    def __init__(self, iterable: Any = None, **_: Any):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, or a silent bar when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
