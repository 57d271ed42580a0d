"""The value and gradient of a batched log density, traced once into one flat program.

A sampler asks for ``(log p(u_c), ∇ log p(u_c))`` for C chains thousands of times. Running a
Pyro model for that pays Python for every site, every distribution and autograd's tape on every
call. Here the whole computation, forward and backward, is recorded once as a graph of ATen
operations (``torch.fx``'s ``make_fx`` over ``torch.func.grad_and_value``) and replayed by
``torch.jit.trace``: the Pyro model, its handlers and the autograd tape are gone from the loop,
only the arithmetic is left (≈0.15 ms for 128 chains of eight schools, against ≈1.3 ms through
autograd).

Replaying a recording is only right if the model takes the same path for every input: a model
that branches on a latent's value in Python would be recorded down one branch. ``vmap`` already
refuses such models (a batched tensor has no single truth value), and the result is checked
against the eager function at fresh random points (value and gradient), so a recording that
disagrees is never used.

``Cost`` counts the recorded program's operations and the elements they touch: a deterministic
measure of where time goes (dispatch for small models, arithmetic for large ones), used to pick
the number of chains and threads without timing anything, so the same seed gives the same draws.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import torch

ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (C, d) -> (C,), (C, d)

# Calibrated on this project's machines (2 cores, torch 2.13 CPU, float64): a replayed ATen op
# costs ≈1 µs to dispatch, and ≈1.2 ns per float64 element it writes.
DISPATCH_S = 1.0e-6
ELEMENT_S = 1.2e-9
EAGER_OVERHEAD = 10  # an op run eagerly through Pyro and autograd costs ~10 recorded ones
# torch splits an elementwise op over threads above 32768 elements; a second thread pays off
# once the average op is a few times that.
PARALLEL_ELEMENTS = 100_000


class Cost(NamedTuple):
    """Operations and elements written by one call of a recorded program."""

    ops: int
    elements: int

    def seconds(self, chains: int, recorded_chains: int) -> float:
        """Predicted seconds per call at ``chains`` (elements scale with the chains)."""
        return self.ops * DISPATCH_S + self.elements * chains / recorded_chains * ELEMENT_S

    def threads(self, chains: int, recorded_chains: int, available: int) -> int:
        per_op = self.elements * chains / recorded_chains / max(self.ops, 1)
        return min(2, available) if per_op >= PARALLEL_ELEMENTS else 1


def autograd(f: Callable[[torch.Tensor], torch.Tensor]) -> ValueAndGrad:
    """Value and gradient of a batched density through autograd (the fallback)."""

    def value_and_grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = u.detach().requires_grad_(True)
        value = f(u)
        (grad,) = torch.autograd.grad(value.sum(), u)
        return value.detach(), grad

    return value_and_grad


def record(f: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> tuple[ValueAndGrad, Cost]:
    """Record value and gradient of the batched ``f`` (C, d) -> (C,) at ``u`` into one traced
    program. Chains are independent, so the gradient of the sum is every chain's gradient."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import grad_and_value

    def total(x: torch.Tensor):
        value = f(x)
        return value.sum(), value

    def value_and_grad(x: torch.Tensor):
        grad, (_, value) = grad_and_value(total, has_aux=True)(x)
        return value, grad

    graph = make_fx(value_and_grad)(u)
    traced = torch.jit.trace(graph, (u,), check_trace=False)
    return traced, cost(graph)


def measure(value_and_grad: ValueAndGrad, u: torch.Tensor) -> Cost:
    """The ``Cost`` of one eager call, counted at dispatch (for a density that could not be
    recorded); an eager op costs Python overhead besides, hence ``EAGER_OVERHEAD``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        ops = elements = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.elements += t.numel()
            return out

    with Count() as count:
        value_and_grad(u)
    return Cost(count.ops * EAGER_OVERHEAD, count.elements)


def cost(graph) -> Cost:
    ops = elements = 0
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        ops += 1
        val = node.meta.get("val")
        for t in val if isinstance(val, (tuple, list)) else (val,):
            if isinstance(t, torch.Tensor):
                elements += t.numel()
    return Cost(ops, elements)


def agree(f: ValueAndGrad, g: ValueAndGrad, u: torch.Tensor) -> bool:
    """Values and gradients of ``f`` and ``g`` match at ``u`` (float64: 1e-6; float32: 1e-4)."""
    tol = {"rtol": 1e-6, "atol": 1e-6} if u.dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}
    (v1, g1), (v2, g2) = f(u), g(u)
    finite = torch.isfinite(v2)  # points where the density is -inf carry no gradient to compare
    return (v1.shape == v2.shape and g1.shape == g2.shape
            and torch.allclose(v1[finite], v2[finite], **tol)
            and torch.allclose(g1[finite], g2[finite], **tol, equal_nan=True))


def quietly(fn: Callable, *args):
    """``fn(*args)`` with the tracers' and Pyro's per-call warnings silenced."""
    import pyro

    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def chains_for(cost: Cost, recorded_chains: int, warmup: int, draws_per_chain: Callable[[int], float],
               choices=(16, 32, 64, 128)) -> int:
    """The number of chains with the least predicted time for ``warmup`` sequential iterations
    plus the sampling iterations that ``draws_per_chain(C)`` says C chains need. Small models
    are dispatch-bound (more chains are free), large ones arithmetic-bound (each chain costs)."""
    def total(c: int) -> float:
        return (warmup + draws_per_chain(c)) * cost.seconds(c, recorded_chains)

    return min(choices, key=lambda c: (total(c), -c))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads, restoring the caller's count. Measured: SVI on
    polynomial_d3 runs 2.3x faster on one thread than on two, and a fixed count keeps float
    reductions, hence summary.csv, independent of the machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
