"""PredRNN's training memory: what a training step keeps for the backward pass, counted exactly
with autograd's saved-tensor hooks (the peak of a training step is that plus a few transients),
and that the memory savings leave every result bit for bit the same."""

import contextlib
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
from framecast.speed.malloc import fix_mmap_threshold
if sys.argv[1] == "config":  # trainer.malloc: fixed, as framecast fit applies it
    from framecast import speed
    from framecast.config import TrainerConfig
    done = speed.tune_malloc(TrainerConfig(malloc="fixed"))
else:
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
    """With trainer.malloc: fixed or FRAMECAST_MALLOC=fixed, fit() fixes glibc's mmap threshold (speed/malloc.py): the 200 MiB of
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
    keyed = subprocess.run(
        [sys.executable, "-c", _FREED, "config"], capture_output=True, text=True, check=True, env=env
    )
    assert "mmap threshold fixed at 1024 KiB" in keyed.stdout and float(keyed.stdout.split()[-1]) > 190


# --------------------------------------------------------------------------- the activation arena


def _grads(model, clip, arena=None, channels_last=False):
    """Loss and gradients of one training step, with the forward pass inside ``arena`` if given."""
    model.zero_grad(set_to_none=True)
    n = clip.shape[1]
    with arena.saving() if arena is not None else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        out = model(clip[:, :4], n - 4, future=clip[:, 4:], mask=torch.ones(clip.shape[0], n - 2))
    loss = F.mse_loss(out.frames, clip[:, -out.frames.shape[1] :]) + sum(out.losses.values())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("predrnn", KW),
        ("predrnn_v2", KW),  # torch.utils.checkpoint saves its inputs through the hooks too
        ("predrnn", {**KW, "checkpoint_cells": 1}),
        ("convlstm", {}),
        ("simvp", {}),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_arena_gives_the_same_loss_and_gradients_bit_for_bit(name, overrides, channels_last):
    from framecast.registry import model_size
    from framecast.speed.arena import ActivationArena

    torch.manual_seed(0)
    model = framecast.create_model(name, **{**model_size(name, "test"), **overrides}).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    size = getattr(model.config, "image_size", 16)
    clip = torch.rand(2, 8, 1, size, size)
    arena = ActivationArena(block_bytes=1 << 16, min_bytes=0)  # small blocks: many of them, reused
    plain = _grads(model, clip)
    for _ in range(2):  # the second step reuses the first one's blocks
        ours = _grads(model, clip, arena)
        assert torch.equal(ours[0], plain[0])
        for a, b in zip(ours[1], plain[1], strict=True):
            assert torch.equal(a, b)
    assert arena.copies > 0


def test_the_arena_reuses_its_blocks_and_copies_a_tensor_saved_twice_once():
    from framecast.speed.arena import ActivationArena

    torch.manual_seed(0)
    model = framecast.create_model("predrnn", **KW).train()
    clip = torch.rand(2, 8, 1, 16, 16)
    arena = ActivationArena(block_bytes=1 << 16, min_bytes=0, release=False)
    _grads(model, clip, arena)
    blocks = [b for b, _ in arena.blocks]
    copies = arena.copies
    for _ in range(3):
        _grads(model, clip, arena)
    assert [b for b, _ in arena.blocks] == blocks  # the same blocks: no new memory after the first step
    assert arena.copies == 4 * copies  # the same tensors each step

    x = torch.randn(64, 64, requires_grad=True)
    with arena.saving():
        before = arena.copies
        s = x.exp()  # exp saves its output; the product saves it again
        (s * s).sum().backward()
    assert arena.copies - before == 1  # x (a leaf that needs no saving here) and s once


def test_the_arena_gives_its_blocks_back_during_the_backward_pass():
    """By default (release) a block goes back to the system as soon as the backward pass has
    freed what it held, so the backward pass's own temporaries do not come on top of a full arena;
    the next forward pass takes fresh blocks."""
    from framecast.speed.arena import ActivationArena

    torch.manual_seed(0)
    model = framecast.create_model("predrnn", **KW).train()
    clip = torch.rand(2, 8, 1, 16, 16)
    arena = ActivationArena(block_bytes=1 << 13, min_bytes=0)
    with arena.saving():
        out = model(clip[:, :4], 4, future=clip[:, 4:], mask=torch.ones(2, 6))
    full = len(arena.blocks)
    assert full > 8 and arena.released == 0
    F.mse_loss(out.frames, clip[:, 1:]).backward()
    assert arena.released > 0 and len(arena.blocks) < full  # given back while the backward pass ran
    arena.release_idle()  # what is left once it has finished (runner: before checkpoints, after fit)
    assert arena.blocks == [] and arena.reserved_bytes == 0
    with arena.saving():  # a block holding a live saved tensor is never given back
        y = torch.randn(64, 64, requires_grad=True).exp()
    assert arena.release_idle() == 0 and len(arena.blocks) == 1
    y.sum().backward()


def test_a_recomputable_tensor_is_kept_as_its_inputs_with_the_same_gradients():
    from framecast.layers.saved import recomputable
    from framecast.speed.arena import ActivationArena

    x = torch.randn(64, 64, requires_grad=True)

    def step(arena=None):
        with arena.saving() if arena is not None else contextlib.nullcontext():
            a, b = x.exp(), x.tanh()  # each saves its output
            both = recomputable(torch.cat([a, b]), lambda u, v: torch.cat([u, v]), a, b)
            loss = both.sin().sum()  # sin saves the concatenation: kept as a, b, which are kept anyway
        return torch.autograd.grad(loss, x)[0]

    plain = step()
    arena = ActivationArena(min_bytes=0)
    assert torch.equal(step(arena), plain)
    assert arena.copies == 2 and arena.pass_bytes == 2 * 64 * 64 * 4  # a and b, not the concatenation
    with arena.saving(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        out = x * 2
        assert recomputable(out, torch.mul, x, 2) is out
        assert not arena._recipes  # another's hooks are the innermost (checkpoint's): nothing noted


@pytest.mark.parametrize("name", ["predrnn", "predrnn_v2"])
def test_in_the_arena_a_predrnn_cell_step_keeps_11_tensors(name):
    """Through the arena, [c', m'] is kept as c', m' (which the next step keeps anyway) and
    PredRNN-V2's increments i * g, i' * g' as their factors: 11 (B, nh, H, W) tensors per cell
    step for both (7 gates, tanh(conv_last), h, c, m), from 13 and 15 without it."""
    from framecast.speed.arena import ActivationArena

    torch.manual_seed(0)
    model = framecast.create_model(name, **{**KW, "num_hidden": (32, 32)}).train()
    arena = ActivationArena(min_bytes=0, release=False)
    batch, frames = 2, 6
    clip = torch.rand(batch, frames, 1, 16, 16)
    with arena.saving():
        model(clip[:, :3], frames - 3, future=clip[:, 3:], mask=torch.ones(batch, frames - 2))
        kept = arena.pass_bytes
    cell_steps = len(model.config.num_hidden) * (frames - 1)
    units = kept / (batch * 32 * 4 * 4 * 4) / cell_steps
    assert units < 11.7, units  # + the frames and the head's input
    assert units < saved_units(model) - 1.5  # the same step without the arena


def test_the_arena_keeps_two_graphs_apart_and_leaves_what_cannot_help():
    """Two forward passes before either backward (gradient accumulation by hand) must not
    share blocks; parameters, small tensors and strided views are saved as they are."""
    from framecast.speed.arena import ActivationArena

    arena = ActivationArena(block_bytes=1 << 12, min_bytes=1024)
    w = torch.nn.Parameter(torch.randn(32, 32))
    xs = [torch.randn(32, 32), torch.randn(32, 32)]
    ref = [torch.autograd.grad((x @ w).tanh().sum(), w)[0] for x in xs]
    outs = []
    for x in xs:
        with arena.saving():
            outs.append((x @ w).tanh().sum())
    for out, expected in zip(outs, ref, strict=True):
        assert torch.equal(torch.autograd.grad(out, w)[0], expected)

    assert not arena.qualifies(w)  # a parameter
    assert not arena.qualifies(torch.randn(8, 8))  # 256 bytes < min_bytes
    assert not arena.qualifies(torch.randn(64, 64)[:, ::2])  # a strided view: copying changes its layout
    assert arena.qualifies(torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last))


def test_the_arena_trims_the_heap_after_blocks_of_small_tensors_only(monkeypatch):
    from framecast.speed import arena as memory

    calls = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: calls.append(1))
    x = torch.randn(64, 64, requires_grad=True)  # 16 KiB
    for trim_below, trims in ((32 << 10, True), (8 << 10, False)):  # 16 KiB tensors: small, then large
        arena = memory.ActivationArena(block_bytes=64 << 10, min_bytes=0, trim_below=trim_below)
        with arena.saving():
            y = x
            for _ in range(12):
                y = y.exp().tanh()  # each saves its 16 KiB output: 4 to a block
            y.sum().backward()
        assert len(arena.blocks) > 1
        assert (arena.trims > 0) is trims
    assert len(calls) == 5  # 6 blocks filled in turn, a trim between each two


def test_the_arena_steps_aside_after_a_first_pass_that_copies_less_than_its_threshold():
    """Small activations: no measured saving, so the hooks' per-tensor cost is skipped from the
    second pass on; a pass that copies ``engage_bytes`` (by default 1 GiB: the official sizes,
    where the peak fell 40%) keeps it."""
    from framecast.speed.arena import ENGAGE_BYTES, ActivationArena, saving_if_worthwhile

    assert ActivationArena().engage_bytes == ENGAGE_BYTES == 1 << 30
    x = torch.randn(64, 64, requires_grad=True)  # 16 KiB
    for engage_bytes, worthwhile in ((1 << 20, False), (32 << 10, True)):
        arena = ActivationArena(block_bytes=16 << 10, min_bytes=0, engage_bytes=engage_bytes)
        for _ in range(2):
            with saving_if_worthwhile(arena):
                x.exp().tanh().sum().backward()  # 32 KiB saved
        assert arena.worthwhile is worthwhile
        assert arena.copies == (4 if worthwhile else 2)


def test_the_task_trains_through_the_arena_by_default():
    from framecast.config import RunConfig, build_dataclass
    from framecast.speed.arena import ActivationArena
    from framecast.training.runner import make_task

    cfg = build_dataclass(RunConfig, {"model": {"name": "predrnn", "num_hidden": [8, 8], "filter_size": 3}})
    task = make_task(cfg)
    assert task.arena is not None
    off = make_task(build_dataclass(RunConfig, {"model": cfg.model, "trainer": {"activation_arena": False}}))
    assert off.arena is None
    off.model.load_state_dict(task.model.state_dict())
    clip = torch.rand(2, cfg.data.n_context + cfg.data.n_future, 1, 64, 64)
    task.arena.min_bytes = 0
    losses = []
    for t in (task, off):
        loss, _ = t.loss(clip, None)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(*losses)
    assert task.arena.copies > 0
    for a, b in zip(task.model.parameters(), off.model.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    # a checkpoint written between steps: the idle blocks are given back (even without release)
    task.arena = ActivationArena(block_bytes=1 << 16, min_bytes=0, release=False)
    loss, _ = task.loss(clip, None)
    loss.backward()
    assert task.arena.reserved_bytes > 0
    task.on_save_checkpoint({})
    assert task.arena.reserved_bytes == 0


def test_a_recomputable_tensor_changed_in_place_is_copied_and_recipes_do_not_nest():
    """The recipe holds only while ``out`` is as it was marked; a recipe whose input is itself
    kept as a recipe is not made (``out`` is copied instead): gradients as without the arena."""
    from framecast.layers.saved import recomputable
    from framecast.speed.arena import ActivationArena

    x = torch.randn(64, 64, requires_grad=True)
    w = torch.randn(64, 64, requires_grad=True)

    def step(arena=None, nested=False):
        with arena.saving() if arena is not None else contextlib.nullcontext():
            a, b = x.exp(), x.tanh()
            p = recomputable(a * b, torch.mul, a, b)
            if nested:
                p = recomputable(p * a, torch.mul, p, a)
            else:
                p.mul_(2)  # changed after marking: the recipe would remake the old values
            loss = (p @ w).sum()
        return torch.autograd.grad(loss, (x, w))

    for nested in (False, True):
        plain = step(nested=nested)
        ours = step(ActivationArena(min_bytes=0), nested=nested)
        for a, b in zip(ours, plain, strict=True):
            assert torch.equal(a, b)
