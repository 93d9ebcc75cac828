"""Memory of training: the activation arena (on by default) and glibc's mmap threshold (opt-in).

A recurrent model's training step allocates a few thousand activation tensors of one size (e.g.
2 MiB: batch 16 x 128 channels x 16 x 16 in fp32), keeps them for the backward pass and frees
them all. glibc's malloc serves a block above its mmap threshold with ``mmap`` and gives it back
on free, but it raises the threshold to the size of each mmapped block freed (its "dynamic
threshold", up to 32 MiB). After the first activations every one therefore comes from the heap,
where freed blocks sit between live ones and small objects pin the holes: the resident set of
the official 4 x 128 PredRNN peaks at 4.7 GiB (fp32, batch 16; PredRNN-V2 4.9), though what is
alive never exceeds ~3.2 GiB.

``fix_mmap_threshold`` sets ``M_MMAP_THRESHOLD`` to a fixed 1 MiB with ``mallopt`` (which turns
the dynamic threshold off): blocks at least that large are always mmapped and returned on free;
and ``M_TRIM_THRESHOLD`` to 256 MiB, since a fixed mmap threshold also pins the trim threshold at
128 KiB, and trimming the heap's top after every free made small models' steps slower. Results
are bit for bit the same (the allocator does not change what is computed).

It is opt-in (``FRAMECAST_MALLOC=fixed``; ``framecast fit`` applies it then), because what it
costs depends on the model. Measured here (``benchmarks/memory.py``, ``benchmarks/speed.py``):
official 4 x 128 PredRNN, fp32, batch 16, three steps: peak 3.16 GiB, PredRNN-V2 3.46 GiB
(6.80 / 6.90 with glibc's default in that run, which kept each step's output alive through the
next step); a step takes 12% / 26% longer (44.8 -> 50.2 s, 47.1 -> 59.4 s, medians: the page faults
of fresh mmapped pages); at
the cpu sizes of the RNNs (activations below 1 MiB) peak and step time unchanged within noise;
but SimVP / TAU at their cpu sizes, whose full-resolution activations of every frame are tens
of MiB, ran much slower (gSTA inference 44 -> 25 samples/s), since glibc's default keeps such
blocks on the heap for reuse once its threshold has risen. A fixed 2.1 or 4 MiB threshold kept
the 4.7 GiB peak. By hand: ``MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=268435456`` in the
environment. Other C libraries (macOS, musl) are left alone.

``ActivationArena`` (on by default in training, ``trainer.activation_arena``) attacks the same
growth from the other side without the page faults: with saved-tensor hooks
(``torch.autograd.graph.saved_tensors_hooks``) it copies every activation the backward pass will
need (at least 1 MiB, on the CPU) into a few 64 MiB blocks that live across steps and are
reused once no saved tensor points into them. The heap then holds only short-lived temporaries
and the interpreter's small objects, so freed activations no longer leave holes that those
objects pin. Where a first pass fills less than one block (small models), the arena steps aside:
its hooks cost a few per cent there and the heap does as well. Official PredRNN, fp32, batch 16, glibc's default: peak 4.69 -> 3.46 GiB,
PredRNN-V2 4.95 -> 3.93 GiB; the same loss bit for bit; step time unchanged within this
machine's noise (``benchmarks/memory.py``; the README has the figures).

Two refinements took those peaks lower still (the same results bit for bit). The arena gives a
block back to the system during the backward pass once it has freed what the block held
(``release``; looked for every 32 unpacks, the last ones before the next pass or checkpoint), so
the backward pass's own gradient temporaries no longer come on top of a full arena; the next
forward pass faults in fresh blocks (~0.3 s per 2 GiB here, about 1% of an official step). And a
model may mark a tensor ``recomputable`` from others the step keeps anyway: PredRNN's [c', m']
and PredRNN-V2's increments i * g, i' * g', so a PredRNN or PredRNN-V2 cell step keeps 11
(B, nh, H, W) tensors instead of 13 / 15.
"""

import contextlib
import ctypes
import ctypes.util
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: activations above it are mmapped; small tensors stay on the heap
TRIM_THRESHOLD = 256 << 20  # free memory the heap's top may keep before it is given back

_applied: str | None = None


def fix_mmap_threshold(threshold: int = DEFAULT_THRESHOLD, force: bool = False) -> str | None:
    """Fix glibc's mmap threshold at ``threshold`` bytes (once per process) when
    ``FRAMECAST_MALLOC=fixed`` is set, or ``force``; returns what was done, or None where it does
    not apply (not asked for, or not glibc)."""
    global _applied
    if _applied is not None:
        return _applied
    if not (force or os.environ.get("FRAMECAST_MALLOC", "default") == "fixed") or not sys.platform.startswith("linux"):
        return None
    try:
        libc = _libc()
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    if mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    _applied = f"glibc {version().decode()} mmap threshold fixed at {threshold // 1024} KiB"
    return _applied


def applied() -> str | None:
    """What ``fix_mmap_threshold`` did in this process, if anything."""
    return _applied


# --------------------------------------------------------------------------- the activation arena

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # how many tensors share a storage (private API)


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
    ) -> None:
        self.block_bytes, self.min_bytes, self.trim_below = block_bytes, min_bytes, trim_below
        self.release = release
        self._unpacks = 0  # unpacks since idle blocks were last looked for
        self.released = 0  # blocks given back so far
        self._block_copies = self._block_bytes = 0  # what the current block holds
        self.trims = 0  # malloc_trim calls so far
        self._pass_bytes = 0  # copied in the current pass
        # whether the passes copy enough to matter: after a first pass that fills less than one
        # block, the heap holds the activations as well as the arena would, and callers skip the
        # hooks' per-tensor cost (``saving_if_worthwhile``)
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
        """Whether this torch tells how many tensors share a storage (needed to reuse blocks)."""
        return _use_count is not None

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
                self.worthwhile = self._pass_bytes >= self.block_bytes
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


def recomputable(out: Tensor, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """Returns ``out``, which the caller promises equals ``fn(*inputs)`` bit for bit (a
    concatenation, a product). Inside an ``ActivationArena.saving()`` whose hooks are the
    innermost, wherever autograd saves ``out`` for the backward pass the arena keeps ``inputs``
    instead, and the backward pass remakes ``out`` from them: worth it when the inputs are saved
    anyway by other operations (each is copied once, when ``out`` is marked) and ``fn`` is cheap.
    If ``out`` is changed in place afterwards it is copied as usual; the inputs must not be
    changed in place (a small or strided input is kept as it is, not copied). PredRNN's cell saves
    the concatenation [c', m'] for its two output convolutions, and c', m' for the next step: 2 of
    its 13 (B, nh, H, W) tensors per cell step are saved twice; PredRNN-V2's decoupling term saves
    i * g and i' * g', whose factors the products save already. The graph is unchanged, so losses
    and gradients are the same bit for bit. Elsewhere (no arena, inference, inside
    ``torch.utils.checkpoint``, which recomputes everything anyway) nothing is done."""
    if _top_hooks is None or not torch.is_grad_enabled():
        return out
    top = _top_hooks(False)
    arena = getattr(top[0], "__self__", None) if top is not None else None
    if isinstance(arena, ActivationArena):
        arena.note_recipe(out, fn, inputs)
    return out


def _libc() -> ctypes.CDLL:
    """The C library (raises OSError where there is none to load)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


_libc_trim = None


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: free heap pages given back to the system (elsewhere: nothing)."""
    global _libc_trim
    if _libc_trim is None:
        try:
            _libc_trim = _libc().malloc_trim
        except (OSError, AttributeError):
            _libc_trim = False
    if _libc_trim:
        _libc_trim(0)


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
