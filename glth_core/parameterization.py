"""Training over Span(D_t): scope parameters live as masked coefficients a, the rest as
ordinary tensors, and the model runs under a parameter dict (``running``: what
``torch.func.functional_call`` does, its swap of the model's tensors done once for many forwards).

Everything here is functional: a ``Parameterization`` turns (coefficients, mask, free
parameters) into the parameter dict of the model, so a later caller can vmap over stacked
coefficients of several seeds without a rewrite. ``Weights`` is the state of one network.
Training keeps the pruned coefficients at 0 by masking their gradients (``mask_gradients``), so
its forward needs no mask; canonical's coefficients train as the scope tensors themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

# ``torch.func.functional_call`` is this swap around one call (tie_weights=True, as its default);
# torch is pinned (constraints.txt)
from torch.nn.utils.stateless import _reparametrize_module

from glth_core.dictionaries import Dictionary


@dataclass
class Weights:
    """The state of one network: scope coefficients plus the free parameters and the model's
    buffers (BatchNorm's running statistics, which train without gradients), by name in ``free``."""

    coeffs: torch.Tensor
    free: dict[str, torch.Tensor] = field(default_factory=dict)

    def clone(self) -> "Weights":
        return Weights(self.coeffs.detach().clone(), {k: v.detach().clone() for k, v in self.free.items()})

    def masked(self, mask: torch.Tensor) -> "Weights":
        return Weights(self.coeffs.detach() * mask, {k: v.detach().clone() for k, v in self.free.items()})


class Parameterization:
    """(coefficients, mask, free parameters) → the model's parameter dict.

    Two paths:
    * general: ``w_scope = D.synthesize(a ⊙ mask)``, split back into tensors;
    * input bottleneck: when a bottleneck dictionary sits on the first layer the dataset is
      transformed once (x ↦ x U) and the layer's weight on the transformed input is the
      coefficient matrix C itself; only the kept columns of U are used, so a step gets
      cheaper as pruning proceeds.
    """

    def __init__(self, model: nn.Module, dictionary: Dictionary):
        self.model = model
        self.dictionary = dictionary
        self.scope = set(dictionary.scope_names)
        self.input_bottleneck = bool(dictionary.is_input_layer)
        self.free_names = [n for n, _ in model.named_parameters() if n not in self.scope]
        #: buffers (BatchNorm's running statistics): carried in ``Weights.free``, updated in place
        #: by training-mode forwards, never given gradients
        self.buffer_names = [n for n, _ in model.named_buffers()]

    # -- building the starting point ---------------------------------------------------------
    def weights_of(self, model: nn.Module) -> Weights:
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        coeffs = self.dictionary.analyze(self.dictionary.flatten(params))
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        return Weights(coeffs.detach().clone(), {**{n: params[n] for n in self.free_names}, **buffers})

    def leaves(
        self, w: Weights, factor: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """(what training differentiates, set to require gradients; the scope tensors a training
        forward takes as ``scope``). The coefficients: for an identity dictionary (canonical) each
        scope tensor as its own leaf, a view of ``w.coeffs`` (the optimizer's in-place updates land
        there; no split forward, no concatenation backward), also returned by name; otherwise
        ``w.coeffs`` whole, and {}. Then the free parameters (not the buffers).

        ``factor``: the round's mask as floats (None: all kept), multiplied into the coefficients'
        gradients (``mask_gradients``), so a training forward needs no mask."""
        if self.dictionary.IDENTITY:
            scope = {n: t.requires_grad_(True) for n, t in self.dictionary.unflatten(w.coeffs).items()}
            factors = [None] * len(scope) if factor is None else self.dictionary.unflatten(factor).values()
            for t, f in zip(scope.values(), factors):
                mask_gradients(t, f)
            coeffs = list(scope.values())
        else:
            scope, coeffs = {}, [mask_gradients(w.coeffs.requires_grad_(True), factor)]
        return [*coeffs, *(w.free[n].requires_grad_(True) for n in self.free_names)], scope

    def mode(self, training: bool):
        """A context in which the model runs in training (batch statistics, running ones updated)
        or evaluation mode (running statistics), restored after."""
        return _mode(self.model, training)

    # -- data: what the network sees ----------------------------------------------------------
    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a split once for the input-bottleneck path; identity otherwise."""
        if self.input_bottleneck:
            return self.dictionary.transform_inputs(x)
        return x

    def kept_columns(self, mask: torch.Tensor) -> torch.Tensor | None:
        """For the input bottleneck: indices of columns of U with any kept element (None when
        every column is kept: selecting them all would copy the layer for nothing)."""
        if not self.input_bottleneck:
            return None
        d = self.dictionary
        columns = mask.view(d.d_out, d.d_in).any(dim=0)
        return None if bool(columns.all()) else columns.nonzero().flatten()

    # -- forward ------------------------------------------------------------------------------
    def params(
        self, weights: Weights, mask: torch.Tensor | None, kept: torch.Tensor | None = None, scope: dict | None = None
    ) -> dict:
        """The parameter dict; ``mask`` None means every element is kept. ``scope``: the scope
        tensors by name (``leaves``' training leaves of an identity dictionary), taken as they are."""
        if scope:
            return {**weights.free, **scope}
        a = weights.coeffs if mask is None else weights.coeffs * mask
        if self.input_bottleneck:
            d = self.dictionary
            C = a.view(d.d_out, d.d_in)
            scope_params = {f"{d.layer}.weight": C if kept is None else C.index_select(1, kept)}
        else:
            scope_params = self.dictionary.unflatten(self.dictionary.synthesize(a))
        return {**weights.free, **scope_params}

    def forward(
        self,
        weights: Weights,
        mask: torch.Tensor,
        x: torch.Tensor,
        kept=None,
        memory_format: torch.memory_format | None = None,
        scope: dict | None = None,
    ) -> torch.Tensor:
        """The model's output on ``x``; ``memory_format`` (channels_last on CUDA) is applied to
        the inputs and every 4-D parameter; ``scope``: see ``params``."""
        return self.apply(self.params(weights, mask, kept, scope), x, kept, memory_format)

    def apply(
        self, params: dict, x: torch.Tensor, kept=None, memory_format: torch.memory_format | None = None
    ) -> torch.Tensor:
        """The model's output on ``x`` under a parameter dict made by ``params`` (vmappable: the
        batched trainer maps it over K seeds' stacked dicts)."""
        with self.running(params, kept, memory_format) as run:
            return run(x)

    @contextmanager
    def running(
        self, params: dict, kept=None, memory_format: torch.memory_format | None = None
    ) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """x ↦ the model's output on x under ``params`` (a dict made by ``params``, built once and
        used for many batches: a split's evaluation, a canonical round's training steps), with
        ``params`` installed in the model for the whole context and its own tensors restored after:
        ``functional_call``'s swap of every tensor, once instead of around every forward. The
        model's in-place updates (BatchNorm's running statistics) land in ``params``' tensors.
        ``kept``: the input bottleneck's kept columns; ``memory_format``: applied to the inputs and
        every 4-D parameter (converted once here: under autograd, a forward whose leaves are these
        parameters must convert per call, with ``apply``)."""
        if memory_format is not None:
            params = {k: v.contiguous(memory_format=memory_format) if v.dim() == 4 else v for k, v in params.items()}

        def run(x: torch.Tensor) -> torch.Tensor:
            if kept is not None:
                x = x.index_select(1, kept)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            return self.model(x)

        with _reparametrize_module(self.model, params, tie_weights=True):
            yield run

    @contextmanager
    def training_forward(
        self, w: Weights, kept=None, memory_format: torch.memory_format | None = None, scope: dict | None = None
    ) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """x ↦ a training forward on x from ``w`` (the mask is in the gradients: ``leaves``). With
        ``scope`` (an identity dictionary's leaves) every step runs on the same tensors, so they are
        installed once (``running``) and the model called as it is; a dictionary that synthesizes its
        scope from the coefficients, or a channels_last forward (its 4-D leaves converted in the graph),
        builds the parameters each step (``forward``)."""
        if scope and memory_format is None:
            with self.running(self.params(w, None, kept, scope), kept) as run:
                yield run
        else:
            yield lambda x: self.forward(w, None, x, kept, memory_format, scope)


def mask_gradients(leaf: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
    """``leaf`` (returned), its gradient multiplied in place by ``factor`` (a float mask of its shape;
    None: left alone) once accumulated in each backward. The same numbers as a forward multiplying
    ``leaf`` by ``factor`` when ``leaf`` is 0 wherever ``factor`` is: the forward's values are equal
    (x · 1 = x, 0 · 0 = 0), the kept gradients are the same products, and a pruned entry, with zero
    value and zero gradient, stays exactly 0 under SGD (momentum, dampening, weight decay) and Adam
    (L2 weight decay; eps > 0 keeps its zero moments' step 0 / eps = 0)."""
    if factor is not None:

        def hook(t: torch.Tensor) -> None:
            t.grad.mul_(factor)

        leaf.register_post_accumulate_grad_hook(hook)
    return leaf


@contextmanager
def _mode(model: nn.Module, training: bool):
    before = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(before)
