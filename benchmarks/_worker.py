"""`python -m benchmarks._worker bench_x rows.json`: import one bench module, call run(), write its rows.

On failure the traceback goes to stderr and its last line to ``rows.err`` (the runner's table note).
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

from benchmarks.common import validate


def main() -> int:
    name, out = sys.argv[1], Path(sys.argv[2])
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        if not callable(getattr(module, "run", None)):
            raise AttributeError(f"benchmarks/{name}.py has no run() -> list[dict]")
        rows = validate(module.run(), name)
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, which records the failure
        traceback.print_exc()
        out.with_suffix(".err").write_text(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500] + "\n")
        return 1
    out.write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
