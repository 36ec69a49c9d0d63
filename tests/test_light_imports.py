"""What a workflow job pays before its work: the light report stages import neither torch nor seaborn (they read
sample folders, JSON and CSV files), and building a network on the meta device does not import ``torch._dynamo``
(PyTorch computes meta-device random draws through its Python references, whose first call imports it: ~1.3 s in
every process that builds a network). Checked in fresh interpreters: this test process has imported both."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import torch
from torch import nn

from retrievegan.models.init import build, meta_device

# library modules of the stages figure-qualitative, figure-compatibility, compatibility, compat-summary, claims,
# tables, report, dataset-table, study-trials / study-simulate (and the modules they import lazily)
LIGHT_MODULES = (
    "retrievegan.commands.report",
    "retrievegan.commands.claims",
    "retrievegan.commands.evaluate",
    "retrievegan.eval.samples",
    "retrievegan.eval.figures",
    "retrievegan.eval.compatibility",
    "retrievegan.eval.tables",
    "retrievegan.eval.report",
    "retrievegan.eval.claims",
    "retrievegan.data.patches",
    "retrievegan.data.scene_graph",
)


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_light_stages_import_neither_torch_nor_seaborn():
    found = _fresh(f"""
import importlib, json, sys
for name in {LIGHT_MODULES!r}:
    importlib.import_module(name)
print(json.dumps({{m: m in sys.modules for m in ("torch", "seaborn")}}))
""")
    assert found == {"torch": False, "seaborn": False}


class _EveryLayer(nn.Module):
    """The torch layer types the project's networks are made of."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.linear = nn.Linear(4, 6)
        self.conv1 = nn.Conv1d(2, 3, 3)
        self.conv = nn.Conv2d(3, 5, 3)
        self.deconv = nn.ConvTranspose2d(5, 3, 4, stride=2)
        self.bn1, self.bn = nn.BatchNorm1d(6), nn.BatchNorm2d(5)
        self.inorm = nn.InstanceNorm2d(5, affine=True)
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=True)

    def init_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for tensor in (*self.parameters(), *self.buffers()):
                tensor.copy_(
                    torch.randn(tensor.shape, generator=generator)
                    if tensor.is_floating_point()
                    else torch.zeros_like(tensor)
                )


def test_building_on_the_meta_device_does_not_import_dynamo():
    found = _fresh(f"""
import json, sys, torch
from torch import nn
from retrievegan.models.init import build
{inspect.getsource(_EveryLayer)}
before = "torch._dynamo" in sys.modules
build(_EveryLayer, torch.Generator().manual_seed(0))
print(json.dumps({{"before": before, "after": "torch._dynamo" in sys.modules}}))
""")
    assert found == {"before": False, "after": False}


def test_meta_device_skips_only_the_constructors_random_initialisation():
    with meta_device():
        module = _EveryLayer()
        plain = torch.ones(3)
    assert all(t.is_meta for t in module.parameters()) and plain.is_meta
    real = torch.zeros(4)
    with meta_device():
        nn.init.normal_(real)  # a tensor that is not on the meta device is initialised as usual
        torch.Tensor.uniform_(real, 2.0, 3.0)
    assert bool(((real >= 2.0) & (real <= 3.0)).all())
    # build() gives the same values whatever the constructors did on the meta device
    a = build(_EveryLayer, torch.Generator().manual_seed(3))
    with torch.device("meta"):
        b = _EveryLayer()
    b = b.to_empty(device="cpu")
    b.init_parameters(torch.Generator().manual_seed(3))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
