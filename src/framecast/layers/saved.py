"""``recomputable``: a model states that a tensor is cheap to remake from others.

A fact about the model's arithmetic, not a speed mechanism: ``recomputable(out, fn, *inputs)``
promises that ``out`` equals ``fn(*inputs)`` bit for bit, and returns ``out`` unchanged. Whoever
keeps the activations of a training step for its backward pass may keep ``inputs`` instead of
``out`` and remake ``out`` when asked (the idea of gradient checkpointing, Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174, applied to one tensor). Such
a keeper registers itself with ``set_keeper``; with none registered (the default) nothing is
done. Models import this module only: it depends on nothing of framecast.
"""

from collections.abc import Callable

from torch import Tensor

Keeper = Callable[[Tensor, Callable[..., Tensor], tuple], None]

_keeper: Keeper | None = None


def set_keeper(keeper: Keeper | None) -> Keeper | None:
    """Register ``keeper(out, fn, inputs)``, told of every ``recomputable`` tensor; returns the
    one it replaces (None: nothing is told)."""
    global _keeper
    previous, _keeper = _keeper, keeper
    return previous


def recomputable(out: Tensor, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
    """Returns ``out``, which the caller promises equals ``fn(*inputs)`` bit for bit (a
    concatenation, a product); the inputs must not be changed in place afterwards. The graph is
    unchanged, so losses and gradients are the same whether or not a keeper acts on it."""
    if _keeper is not None:
        _keeper(out, fn, inputs)
    return out
