"""PredRNN's training memory: what a training step keeps for the backward pass, counted exactly
with autograd's saved-tensor hooks (the peak of a training step is that plus a few transients),
and that the memory savings leave every result bit for bit the same."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import framecast
from framecast.models import predrnn as P

KW = dict(num_hidden=(8, 8), filter_size=3, image_size=16, patch_size=4)


def saved_units(model, batch: int = 2, frames: int = 6) -> float:
    """Unique storage kept for backward by one training step, in (B, nh, H, W) tensors per cell
    step (weights excluded)."""
    seen: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    clip = torch.rand(batch, frames, 1, 16, 16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(clip[:, :3], frames - 3, future=clip[:, 3:], mask=torch.ones(batch, frames - 2))
        F.mse_loss(out.frames, clip[:, 1:]) + sum(out.losses.values())
    nh, hw = model.config.num_hidden[0], (16 // model.config.patch_size) ** 2
    cell_steps = len(model.config.num_hidden) * (frames - 1)
    return sum(seen.values()) / (batch * nh * hw * 4) / cell_steps


@pytest.mark.parametrize("name, most", [("predrnn", 14.0), ("predrnn_v2", 16.0)])
def test_a_training_step_keeps_few_tensors_per_cell_step(name, most):
    """PredRNN keeps 13 (B, nh, H, W) tensors per cell step (7 gates, tanh(conv_last), h, c', m'
    and their concatenation) + the frames: 13.6 here. PredRNN-V2's decoupling term is recomputed
    in backward (a 1x1 conv): 15.6, before 19.9 (the official 4 x 128 at batch 16: 3.54 -> 2.66
    GiB kept, peak RSS of a training step 5.31 -> 4.87 GiB in one measurement)."""
    units = saved_units(framecast.create_model(name, **{**KW, "num_hidden": (32, 32)}).train())
    assert units <= most, units


def _reference_cell(cell, x, h, c, m):
    """The ST-LSTM cell as the official code writes it (separate c', m' and their concatenation)."""
    i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = cell.conv_x(x).chunk(7, dim=1)
    i_h, f_h, g_h, o_h = cell.conv_h(h).chunk(4, dim=1)
    i_m, f_m, g_m = cell.conv_m(m).chunk(3, dim=1)
    i, f, g = torch.sigmoid(i_x + i_h), torch.sigmoid(f_x + f_h + 1.0), torch.tanh(g_x + g_h)
    c_new = f * c + i * g
    ip, fp, gp = torch.sigmoid(i_xp + i_m), torch.sigmoid(f_xp + f_m + 1.0), torch.tanh(g_xp + g_m)
    m_new = fp * m + ip * gp
    mem = torch.cat([c_new, m_new], dim=1)
    o = torch.sigmoid(o_x + o_h + cell.conv_o(mem))
    return o * torch.tanh(cell.conv_last(mem)), c_new, m_new


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_cell_gives_the_official_values_bit_for_bit(channels_last):
    torch.manual_seed(0)
    cell = P.SpatioTemporalLSTMCell(16, 8, 4, 3, False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cell.to(memory_format=fmt)
    x, h, c, m = (torch.randn(2, n, 4, 4).contiguous(memory_format=fmt) for n in (16, 8, 8, 8))
    h_new, c_new, m_new, _, _ = cell(x, h, c, m)
    for ours, ref in zip((h_new, c_new, m_new), _reference_cell(cell, x, h, c, m), strict=True):
        assert torch.equal(ours, ref)


def test_recomputing_the_decoupling_term_gives_the_same_loss_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = framecast.create_model("predrnn_v2", **KW).train()
    clip = torch.rand(2, 6, 1, 16, 16)

    def step():
        model.zero_grad()
        out = model(clip[:, :3], 3, future=clip[:, 3:], mask=torch.ones(2, 4))
        loss = F.mse_loss(out.frames, clip[:, 1:]) + out.losses["decouple"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    lean = step()
    monkeypatch.setattr(P, "checkpoint", lambda fn, *args, **kw: fn(*args))  # keep everything instead
    plain = step()
    assert torch.equal(lean[0], plain[0])
    for a, b in zip(lean[1], plain[1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("lean", [1, True])
def test_checkpointing_some_or_all_cells_gives_the_same_gradients(lean):
    torch.manual_seed(0)
    plain = framecast.create_model("predrnn", **KW).train()
    some = framecast.create_model("predrnn", **KW, checkpoint_cells=lean).train()
    some.load_state_dict(plain.state_dict())
    clip = torch.rand(2, 6, 1, 16, 16)
    grads = []
    for model in (plain, some):
        out = model(clip[:, :3], 3, future=clip[:, 3:], mask=torch.ones(2, 4))
        F.mse_loss(out.frames, clip[:, 1:]).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    assert saved_units(some) < saved_units(plain)  # and it keeps less
    with pytest.raises(ValueError, match="checkpoint_cells"):
        framecast.create_model("predrnn", **KW, checkpoint_cells=3)


_FREED = """
import os, sys, torch
from framecast.memory import fix_mmap_threshold
done = fix_mmap_threshold() if sys.argv[1] == "fixed" else None
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
live = []
for step in range(3):  # training steps: 2 MiB activations kept for backward, then freed
    acts = []
    for _ in range(100):
        acts.append(torch.ones(2**19))
        live.append(torch.ones(64))  # small tensors that stay alive between them (optimiser state, logs)
    before_free = rss()
    del acts
    after = rss()
print(done, (before_free - after) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_fixed_mmap_threshold_gives_each_steps_activations_back():
    """With FRAMECAST_MALLOC=fixed, fit() fixes glibc's mmap threshold (memory.py): the 200 MiB of
    activations a step frees leave the resident set at once, in the third step as in the first.
    Without it (the default) nothing is changed."""
    env = {**os.environ, "FRAMECAST_MALLOC": "fixed"}
    run = subprocess.run([sys.executable, "-c", _FREED, "fixed"], capture_output=True, text=True, check=True, env=env)
    returned = float(run.stdout.split()[-1])
    assert run.stdout.startswith("glibc ") and "mmap threshold fixed at 1024 KiB" in run.stdout, run.stdout
    assert returned > 190, run.stdout  # MiB given back of the 200 freed
    env.pop("FRAMECAST_MALLOC")
    default = subprocess.run(
        [sys.executable, "-c", _FREED, "fixed"], capture_output=True, text=True, check=True, env=env
    )
    assert default.stdout.startswith("None "), default.stdout  # opt-in: glibc left as it is
