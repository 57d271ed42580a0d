"""``python -m zoo.bench bdl``: time per epoch of Bayes by backprop vs a plain PyTorch network.

One UCI-sized regression problem: bostonHousing split 0 (455 × 13, standardised on the training
rows) when ``zoo.datasets.uci`` finds it, else synthetic data of the same shape. Every contender
trains ``bnn_mlp``'s network (13 → 50 ReLU → 1) with Adam, lr 0.01, batch size 32, in float32:

- **floor**: the deterministic MLP (``zoo.bdl.net.mlp``), squared error, ``zoo.bdl.net.train``
  — the cost of the network alone;
- **BBB (LRT)**: ``zoo.bdl.bbb.fit_bbb``'s default path (local reparameterisation, the loss and
  its gradient by hand, one flat parameter vector), same loop, same steps;
- **BBB (weights)**: ``fit_bbb(local_reparameterization=False)``: one weight draw per step,
  autograd;
- **zoo SVI**: ``zoo.fit("bnn_mlp", method="svi", guide="model", elbo="meanfield",
  subsample_size=32)``'s step (``setup_svi``: Pyro's JIT-compiled ``TraceMeanField_ELBO``),
  per step × steps per epoch;
- **Laplace** (when ``zoo.bdl.laplace`` is there): ``fit_laplace``'s whole fit (MAP training
  for the same epochs and batch size, GGN, evidence), per epoch of its MAP training, float64
  as that module trains.

Times are medians over repeats, contenders rotated within each repeat, after an untimed
warm-up of each. The target: BBB (LRT) within 2× the floor per epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyro
import torch

from ..fit import default_dtype
from . import BenchResult

N, D, HIDDEN, BATCH, LR = 455, 13, 50, 32, 1e-2
TARGET = 2.0  # BBB (LRT) per epoch within this factor of the floor


@dataclass(frozen=True)
class Sizes:
    epochs: int  # per timed run
    repeats: int


FULL = Sizes(epochs=40, repeats=5)
NOTES: dict[str, Any] = {}  # what the contenders report besides their time (the SVI path)
QUICK = Sizes(epochs=2, repeats=1)


def problem() -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, description): bostonHousing split 0 if the UCI loader finds it, else synthetic
    data of its shape (x ~ N(0, I), y a smooth nonlinear function of x plus noise, seeded)."""
    try:
        from ..datasets.uci import list_uci, load_uci

        if "bostonHousing" in list_uci():
            data = load_uci("bostonHousing", 0)
            x, y = data["x_train"].float(), data["y_train"].float()
            return x, y, f"UCI bostonHousing split 0 (train: {x.shape[0]} × {x.shape[1]}, standardised)"
    except Exception:  # the loader is optional here; any failure means synthetic data
        pass
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D))
    w = rng.standard_normal((D, 2)) / math.sqrt(D)
    y = np.sin(x @ w[:, 0]) + (x @ w[:, 1]) ** 2 + 0.3 * rng.standard_normal(N)
    return (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32),
            f"synthetic, bostonHousing's shape ({N} × {D}); UCI data not found")


# --------------------------------------------------------------------------------------------
# Contenders: each returns seconds per epoch for ``epochs`` epochs
# --------------------------------------------------------------------------------------------

Contender = Callable[[torch.Tensor, torch.Tensor, int], float]


def floor(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    from ..bdl.net import mlp, train

    torch.manual_seed(0)
    net = mlp(x.shape[1], HIDDEN, 1)
    z = (x - x.mean(0)) / x.std(0)
    t = (y - y.mean()) / y.std()  # standardised as fit_bbb does

    def loss(idx: torch.Tensor) -> torch.Tensor:
        return (net(z[idx]).squeeze(-1) - t[idx]).square().mean()

    start = time.perf_counter()
    train(list(net.parameters()), loss, x.shape[0], epochs, BATCH, LR)
    return (time.perf_counter() - start) / epochs


def bbb(local_reparameterization: bool) -> Contender:
    def run(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
        from ..bdl.bbb import fit_bbb

        fit = fit_bbb(x, y, hidden=HIDDEN, epochs=epochs, batch_size=BATCH, lr=LR,
                      local_reparameterization=local_reparameterization)
        return fit.info["s_per_epoch"]
    return run


def zoo_svi(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    from ..inference import resolve
    from ..inference.settings import SVISettings
    from ..inference.svi import setup_svi

    steps = epochs * math.ceil(x.shape[0] / BATCH)
    with default_dtype(torch.float32):
        spec, data = resolve("bnn_mlp", {"x": x, "y": (y - y.mean()) / y.std()}, torch.float32)
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        run = setup_svi(spec, data, SVISettings(guide="model", elbo="meanfield",
                                                subsample_size=BATCH, lr=LR))
        for _ in range(10):  # the trace's first runs (torch's profiling executions)
            run.step()
        start = time.perf_counter()
        for _ in range(steps):
            run.step()
        per_epoch = (time.perf_counter() - start) / epochs
    NOTES["zoo_svi_path"] = run.path
    return per_epoch


def laplace_available() -> Callable | None:
    try:
        from ..bdl.laplace import fit_laplace
    except ImportError:
        return None
    return fit_laplace


def laplace(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    fit_laplace = laplace_available()
    assert fit_laplace is not None
    start = time.perf_counter()
    fit_laplace(x.double(), y.double(), task="regression", structure="kron", hidden=HIDDEN,
                epochs=epochs, batch_size=BATCH, lr=LR, seed=0)
    return (time.perf_counter() - start) / epochs


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(quick: bool) -> BenchResult:
    sizes = QUICK if quick else FULL
    x, y, source = problem()
    contenders: dict[str, Contender] = {
        "floor (plain MLP)": floor,
        "BBB, local reparameterisation (fit_bbb)": bbb(True),
        "BBB, weight sampling (fit_bbb)": bbb(False),
        "zoo.fit SVI (Pyro, bnn_mlp + guide)": zoo_svi,
    }
    has_laplace = laplace_available() is not None
    if has_laplace:
        contenders["Laplace (fit_laplace, kron GGN)"] = laplace
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    with default_dtype(torch.float32):  # the networks' dtype, whatever the caller's default
        for name in names:  # untimed warm-up: lazy imports, first traces, allocator
            contenders[name](x, y, 1)
        for rep in range(sizes.repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                times[name].append(contenders[name](x, y, sizes.epochs))
    per_epoch = {name: statistics.median(ts) for name, ts in times.items()}
    base = per_epoch["floor (plain MLP)"]
    ratio = {name: t / base for name, t in per_epoch.items()}
    lrt = ratio["BBB, local reparameterisation (fit_bbb)"]
    verdict = "met" if lrt <= TARGET else "missed"
    steps = math.ceil(x.shape[0] / BATCH)

    lines = [f"| contender | ms / epoch | × floor | fit of {sizes.epochs} epochs (s) |",
             "|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {1e3 * per_epoch[name]:.2f} | {ratio[name]:.2f}× "
                     f"| {per_epoch[name] * sizes.epochs:.2f} |")
    if not has_laplace:
        lines.append("| Laplace (fit_laplace) | not available | — | — |")
    body = "\n".join(lines) + "\n\n" + (
        f"**Target (BBB with local reparameterisation within {TARGET:g}× the plain network per "
        f"epoch): {verdict}** ({lrt:.2f}×).\n\n"
        f"Data: {source}. One epoch = {steps} Adam steps of batch size {BATCH} (lr {LR:g}), "
        f"network {x.shape[1]} → {HIDDEN} ReLU → 1, float32, one particle. Medians over "
        f"{sizes.repeats} repeats of {sizes.epochs} epochs, contenders rotated, after an "
        "untimed warm-up of each. BBB's step adds to the network's: the pre-activations' "
        "variances (a second matrix product per layer), the noise, the closed-form KL over all "
        f"{HIDDEN * (x.shape[1] + 2) + 1} weights and q(τ), i.e. about twice the floor's "
        "arithmetic; its gradient is written by hand (checked against autograd in "
        "tests/test_bbb.py), since at this size autograd's per-operation overhead, not the "
        "arithmetic, sets the time (the weight-sampling row is the autograd path). zoo.fit's "
        "SVI runs Pyro's JIT-compiled TraceMeanField_ELBO with minibatches drawn by the model's "
        f"plate (path: {NOTES.get('zoo_svi_path', '?')}): the price of the generic Pyro path. "
        + ("Laplace is the whole fit_laplace (float64 MAP training for the same epochs, the "
           "Kronecker-factored GGN and the evidence optimisation of the prior precision) "
           "divided by the epochs." if has_laplace else
           "zoo.bdl.laplace.fit_laplace was not importable, so Laplace is not timed."))
    return BenchResult(
        title="BDL: Bayes by backprop vs a plain PyTorch network (time per epoch)",
        markdown=body,
        data={"sizes": vars(sizes), "source": source, "steps_per_epoch": steps,
              "s_per_epoch": per_epoch, "ratio_to_floor": ratio, "target": TARGET,
              "verdict": verdict, "times": times, "zoo_svi_path": NOTES.get("zoo_svi_path")},
    )
