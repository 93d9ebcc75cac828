"""The activation arena: the tensors a training step saves for its backward pass, kept in large
blocks outside the heap (on by default where it pays; ``trainer.activation_arena: false`` turns
it off).

A recurrent model's training step allocates a few thousand activations of one size, keeps them
for the backward pass and frees them all; glibc's heap grows well past what is alive, since the
holes the freed activations leave are pinned by small objects (``framecast.speed.malloc``).
``ActivationArena`` attacks that growth without the page faults of a fixed mmap threshold:
with saved-tensor hooks (``torch.autograd.graph.saved_tensors_hooks``) it copies every activation the backward pass will
need (at least 1 MiB, on the CPU) into a few 64 MiB blocks that live across steps and are
reused once no saved tensor points into them. The heap then holds only short-lived temporaries
and the interpreter's small objects, so freed activations no longer leave holes that those
objects pin.

Two refinements lower the peak further (the same results bit for bit). The arena gives a
block back to the system during the backward pass once it has freed what the block held
(``release``; looked for every 32 unpacks, the last ones before the next pass or checkpoint), so
the backward pass's own gradient temporaries no longer come on top of a full arena; the next
forward pass faults in fresh blocks (~0.3 s per 2 GiB here, about 1% of an official step). And a
model may mark a tensor ``recomputable`` from others the step keeps anyway: PredRNN's [c', m']
and PredRNN-V2's increments i * g, i' * g', so a PredRNN or PredRNN-V2 cell step keeps 11
(B, nh, H, W) tensors instead of 13 / 15.

Gain and cost, measured (``benchmarks/memory.py --models predrnn,predrnn_v2 --modes
default,arena --steps 3``, ``benchmarks/results/memory-train-official-fp32-pt2.14-cpu-xeon-amx.json``,
the AMX Xeon): official 4 x 128 PredRNN, fp32, batch 16, peak 4.89 -> 2.95 GiB (40% less),
PredRNN-V2 5.18 -> 2.99 GiB (42% less); the same losses bit for bit; step time within that
machine's noise (PredRNN 28.6-31.3 s without, 31.3-32.6 s with). A pass there copies 1.6 GiB.
At the cpu sizes no saving of 25% was measured, and with the hooks on every step ConvLSTM's and
PredRNN's steps measured 2-5% slower. So the arena engages only where its first pass copies at
least ``ENGAGE_BYTES`` (1 GiB: the official sizes, large activations) and steps aside from the
second pass on elsewhere. It relies on private torch calls (``torch._C._storage_Use_Count``,
``torch._C._autograd._top_saved_tensors_default_hooks``): without them, and on a GPU, it steps
aside silently (``framecast.speed.support``). Off: ``trainer.activation_arena: false``.
"""

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from framecast.layers import saved
from framecast.speed import support
from framecast.speed.malloc import malloc_trim

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # how many tensors share a storage (private API)
ENGAGE_BYTES = 1 << 30  # a first pass that copies less: the arena steps aside (see the module docstring)


class ActivationArena:
    """Saved activations of training steps, copied into large blocks outside the heap.

    Used as a context around a training forward pass: autograd hands every tensor it saves for
    the backward pass to ``pack``, which copies it into the current block (64-byte aligned, same
    shape, strides and dtype) and returns the copy; the original is freed as soon as the forward
    pass drops it. Once no copy in a block is alive (the backward pass has freed them), the
    block is given back to the system during that backward pass (``release``, the default: the
    backward pass's temporaries then do not come on top of a full arena), or else kept and reused
    by the next pass (``release=False``: no new memory after the first step, no page faults).
    Tensors are saved as they are where
    copying cannot help or is not possible: below ``min_bytes``, parameters, not on the CPU, or
    not dense (strided views). A tensor saved twice (an activation's output and the next
    product's input) is copied once.

    Each time a block is full, if the tensors copied into it were small on average (under
    ``trim_below``, 4 MiB: a recurrent cell's activations), glibc's ``malloc_trim`` gives the
    heap's free pages back to the system: the originals and temporaries freed since left holes
    there that the interpreter's small objects pin, and within one forward pass the resident set
    would otherwise grow by them (official PredRNN-V2, fp32, batch 16: peak 4.11 -> 3.9 GiB).
    After larger tensors it is not done: glibc mmaps those and returns them on free, and trimming
    only made the next ones fault their pages in again (SimVP at its cpu size: 17% slower).

    The results are the same bit for bit: a copy has the values autograd would have read. One
    difference: a saved tensor changed in place after saving no longer raises autograd's
    "modified by an inplace operation" error; the gradient uses the value at saving time.
    Double backward (``create_graph=True``) does not see through the copies. A tensor marked
    ``recomputable`` is kept as its recipe and remade when the backward pass asks for it.
    """

    def __init__(
        self,
        block_bytes: int = 64 << 20,
        min_bytes: int = 1 << 20,
        trim_below: int = 4 << 20,
        release: bool = True,
        engage_bytes: int = ENGAGE_BYTES,
    ) -> None:
        self.block_bytes, self.min_bytes, self.trim_below = block_bytes, min_bytes, trim_below
        self.engage_bytes = engage_bytes
        self.release = release
        self._unpacks = 0  # unpacks since idle blocks were last looked for
        self.released = 0  # blocks given back so far
        self._block_copies = self._block_bytes = 0  # what the current block holds
        self.trims = 0  # malloc_trim calls so far
        self._pass_bytes = 0  # copied in the current pass
        # whether the passes copy enough to matter: after a first pass that copies less than
        # ``engage_bytes``, the arena steps aside (``saving_if_worthwhile``): no measured saving
        # of 25% below that, and the hooks cost a few per cent
        self.worthwhile = True
        self.blocks: list[tuple[Tensor, int]] = []  # (uint8 block, its storage's use count when free)
        self._current: Tensor | None = None
        self._offset = 0
        self._seen: dict[int, tuple[weakref.ref, Tensor]] = {}  # id(original) -> (original, copy)
        # id(tensor) -> (tensor, its version when noted, how to remake it)
        self._recipes: dict[int, tuple[weakref.ref, int, _Recompute]] = {}
        self.copies = 0  # tensors copied so far (tests, benchmarks)

    @staticmethod
    def available() -> bool:
        """Whether this torch has the private calls the arena needs (``support.has_arena_calls``)."""
        return support.has_arena_calls()

    @property
    def pass_bytes(self) -> int:
        """Bytes copied in the current (or last) pass."""
        return self._pass_bytes

    @property
    def reserved_bytes(self) -> int:
        return sum(b.numel() for b, _ in self.blocks)

    def _free_block(self, nbytes: int) -> Tensor:
        for block, idle in self.blocks:
            if block is not self._current and block.numel() >= nbytes and _storage_uses(block) == idle:
                return block
        block = torch.empty(max(self.block_bytes, nbytes), dtype=torch.uint8)
        self.blocks.append((block, _storage_uses(block)))
        return block

    def copy(self, t: Tensor) -> Tensor:
        """A copy of ``t`` in the arena (``t`` must qualify: see ``qualifies``)."""
        nbytes = t.numel() * t.element_size()
        padded = -(-nbytes // 64) * 64
        if self._current is None or self._offset + padded > self._current.numel():
            if self._block_copies and self._block_bytes < self.trim_below * self._block_copies:
                malloc_trim()  # the heap's holes since the last block: resident no more
                self.trims += 1
            self._current, self._offset = self._free_block(padded), 0
            self._block_copies = self._block_bytes = 0
        self._block_copies += 1
        self._block_bytes += nbytes
        self._pass_bytes += nbytes
        # a tensor on the block's storage, not a view of the block: its own version counter
        out = t.new_empty(0).set_(
            self._current.untyped_storage(), self._offset // t.element_size(), t.shape, t.stride()
        )
        self._offset += padded
        with torch.no_grad():
            out.copy_(t.detach())
        self.copies += 1
        return out

    def qualifies(self, t: Tensor) -> bool:
        return (
            t.device.type == "cpu"
            and t.layout == torch.strided
            and not isinstance(t, torch.nn.Parameter)
            and t.numel() * t.element_size() >= self.min_bytes
            and _dense(t)
        )

    def pack(self, t: Tensor) -> "Tensor | _Recompute":
        if t.numel() * t.element_size() < self.min_bytes or not self.qualifies(t):  # the cheap test first
            return t
        key = id(t)
        recipe = self._recipes.get(key)
        if recipe is not None and recipe[0]() is t and t._version == recipe[1]:  # not changed in place since
            return recipe[2]
        hit = self._seen.get(key)
        if hit is not None and hit[0]() is t:
            return hit[1]
        out = self.copy(t)
        self._seen[key] = (weakref.ref(t, lambda _, key=key: self._seen.pop(key, None)), out)
        return out

    @contextlib.contextmanager
    def saving(self) -> Iterator["ActivationArena"]:
        """Route the tensors autograd saves inside this context into the arena."""
        if not self.available():
            yield self
            return
        first = self.copies == 0 and not self.blocks
        self._pass_bytes = 0
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
                yield self
        finally:
            if first:
                self.worthwhile = self._pass_bytes >= self.engage_bytes
            self._seen.clear()
            self._recipes.clear()
            self._current = None  # the next pass starts a free block: nothing of this one is overwritten
            self._block_copies = self._block_bytes = 0

    def note_recipe(self, out: Tensor, fn: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> None:
        """Keep ``inputs`` (through ``pack``: copied once, shared with whoever else saves them)
        instead of ``out`` wherever ``out`` is saved; see ``recomputable``."""
        if not self.qualifies(out):
            return
        packed = tuple(self.pack(x) if isinstance(x, Tensor) else x for x in inputs)
        if any(type(x) is _Recompute for x in packed):  # a recipe of recipes: not remade; out is copied
            return
        key = id(out)
        remember = weakref.ref(out, lambda _, key=key: self._recipes.pop(key, None))
        self._recipes[key] = (remember, out._version, _Recompute(fn, packed))

    def unpack(self, t: "Tensor | _Recompute") -> Tensor:
        if self.release:
            self._unpacks += 1
            if self._unpacks >= 32:
                self._unpacks = 0
                self.release_idle()
        return t.fn(*t.inputs) if type(t) is _Recompute else t

    def release_idle(self) -> int:
        """Give back the blocks no saved tensor points into (but the one being filled); returns how many."""
        keep = [(b, idle) for b, idle in self.blocks if b is self._current or _storage_uses(b) != idle]
        freed = len(self.blocks) - len(keep)
        self.blocks = keep
        self.released += freed
        return freed


class _Recompute(NamedTuple):
    """A saved tensor kept as the recipe that remakes it (``recomputable``)."""

    fn: Callable[..., Tensor]
    inputs: tuple


_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # private API


def _keep(out: Tensor, fn: Callable[..., Tensor], inputs: tuple) -> None:
    """The arena's side of ``framecast.layers.saved.recomputable``: inside an
    ``ActivationArena.saving()`` whose hooks are the innermost, wherever autograd saves ``out``
    for the backward pass the arena keeps ``inputs`` instead, and the backward pass remakes
    ``out`` from them: worth it when the inputs are saved anyway by other operations (each is
    copied once, when ``out`` is marked) and ``fn`` is cheap. If ``out`` is changed in place
    afterwards it is copied as usual (a small or strided input is kept as it is, not copied).
    PredRNN's cell saves the concatenation [c', m'] for its two output convolutions, and c', m'
    for the next step: 2 of its 13 (B, nh, H, W) tensors per cell step are saved twice;
    PredRNN-V2's decoupling term saves i * g and i' * g', whose factors the products save
    already. Elsewhere (no arena, inference, inside ``torch.utils.checkpoint``, which recomputes
    everything anyway) nothing is done."""
    if _top_hooks is None or not torch.is_grad_enabled():
        return
    top = _top_hooks(False)
    arena = getattr(top[0], "__self__", None) if top is not None else None
    if isinstance(arena, ActivationArena):
        arena.note_recipe(out, fn, inputs)


saved.set_keeper(_keep)  # the arena is what acts on a model's recomputable tensors


def saving_if_worthwhile(arena: ActivationArena | None) -> contextlib.AbstractContextManager:
    """``arena.saving()`` while the arena is worth its hooks (see ``ActivationArena.worthwhile``)
    and gradients are recorded; otherwise nothing."""
    if arena is None or not arena.worthwhile or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    return arena.saving()


def _storage_uses(block: Tensor) -> int:
    return _use_count(block.untyped_storage()._cdata)


def _dense(t: Tensor) -> bool:
    """Whether ``t`` covers its elements without gaps or overlaps (contiguous in some dimension order)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True
