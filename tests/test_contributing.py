"""The example model in CONTRIBUTING.md registers, builds at its sizes and trains.

It runs in a fresh process so that the example never joins the registry of the other tests.
"""

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"

CHECK = """
import torch
import framecast
import convstack  # the example file: registers "convstack"
from framecast.registry import get_entry

entry = get_entry("convstack")
assert {"published", "cpu", "test"} <= set(entry.sizes), entry.sizes
assert framecast.create_model("convstack", size="cpu").config.hidden == 32
torch.manual_seed(0)
model = framecast.create_model("convstack", size="test", smooth_weight=0.1).train()
clip = torch.rand(2, 7, 1, 64, 64)
out = model(clip[:, :4], 3, future=clip[:, 4:])
assert out.frames.shape == (2, 3, 1, 64, 64) and set(out.losses) == {"smooth"}, (out.frames.shape, out.losses)
((out.frames - clip[:, 4:]).pow(2).mean() + sum(out.losses.values())).backward()
assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
assert not model.eval()(clip[:, :4], 3).losses  # the model's own terms only in training
print("ok")
"""


def test_contributing_example_model_registers_and_trains(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks, "CONTRIBUTING.md has no python example"
    (tmp_path / "convstack.py").write_text(blocks[0])
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
