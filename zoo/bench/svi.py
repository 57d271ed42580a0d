"""``python -m zoo.bench svi``: time per SVI step, zoo's default ELBO path vs plain Pyro SVI.

Three contenders per model and particle count, on the same float64 data, each with an
AutoNormal guide and Adam (lr 0.01), rebuilt from a fixed seed for every repeat:

- plain Pyro: ``SVI(model, AutoNormal(model), Adam, Trace_ELBO(num_particles=P))``, particles in
  a Python loop, no JIT;
- zoo with ``jit = false``: ``setup_svi`` (what ``zoo.fit(method="svi")`` steps), particles
  vectorised under one plate for registered models;
- zoo's default: the same with the JIT-compiled ELBO (traced and checked before the first step).

A contender's "first step" is its set-up (guide, trace and check for the JIT path) plus one step;
then ``warmup`` steps (which also cover torch's graph-profiling runs) and ``steps`` timed steps.
Contenders are interleaved within each repeat and the median over repeats is reported.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from ..fit import default_dtype
from ..inference import resolve
from ..inference.settings import SVISettings
from ..inference.svi import setup_svi
from ..registry import load_dataset
from . import BenchResult

Step = Callable[[], float]
Start = Callable[[], tuple[Step, str]]  # builds a contender: (one step, ELBO path)


@dataclass(frozen=True)
class Case:
    model: str
    dataset: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    warmup: int  # untimed steps after the first (tracing and torch's profiling runs)
    steps: int  # timed steps per repeat
    repeats: int  # medians over repeats, contenders interleaved


CASES = (
    Case("eight_schools_noncentered", "eight_schools"),
    Case("logistic_regression", "logistic_synthetic", {"n": 1000, "d": 25, "seed": 0}),
    Case("hierarchical_linear", "radon_synthetic"),
)
PARTICLES = (1, 8)
FULL = Sizes(warmup=30, steps=200, repeats=3)
QUICK = Sizes(warmup=2, steps=3, repeats=1)
LR = 0.01
SEED = 0
CONTENDERS = ("plain Pyro", "zoo, jit = false", "zoo")


def _plain_pyro(spec, data: dict, particles: int) -> Start:
    def start() -> tuple[Step, str]:
        svi = SVI(spec.fn, AutoNormal(spec.fn), pyro.optim.Adam({"lr": LR}),
                  Trace_ELBO(num_particles=particles))
        return lambda: svi.step(**data), "plain (Pyro, particles looped)"
    return start


def _zoo(spec, data: dict, particles: int, jit: bool) -> Start:
    def start() -> tuple[Step, str]:
        run = setup_svi(spec, data, SVISettings(num_particles=particles, lr=LR, jit=jit))
        return run.step, run.path
    return start


def _time(start: Start, sizes: Sizes) -> dict[str, Any]:
    """Seconds per step after warm-up, time to first step, and how many steps from the first
    were slower than twice the steady per-step time (tracing and graph profiling)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    t0 = time.perf_counter()
    step, path = start()
    step()
    times = [time.perf_counter() - t0]
    for _ in range(sizes.warmup):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    per_step = (time.perf_counter() - t) / sizes.steps
    slow = next((i for i, s in enumerate(times) if s <= 2 * per_step), len(times))
    return {"s_per_step": per_step, "first_step_s": times[0], "slow_steps": slow, "path": path}


def _cell(case: Case, particles: int, sizes: Sizes) -> dict[str, Any]:
    """One model x particle count: every contender, interleaved, medians over repeats."""
    spec, data = resolve(case.model, load_dataset(case.dataset, **case.args), torch.float64)
    starts = dict(zip(CONTENDERS, (_plain_pyro(spec, data, particles),
                                   _zoo(spec, data, particles, jit=False),
                                   _zoo(spec, data, particles, jit=True))))
    runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    for rep in range(sizes.repeats):
        order = CONTENDERS[rep % len(CONTENDERS):] + CONTENDERS[:rep % len(CONTENDERS)]
        for name in order:  # rotated, so no contender always runs first (or last)
            runs[name].append(_time(starts[name], sizes))
    out: dict[str, Any] = {"model": case.model, "dataset": case.dataset, "args": case.args,
                           "particles": particles}
    for name, rs in runs.items():
        out[name] = {key: statistics.median(r[key] for r in rs)
                     for key in ("s_per_step", "first_step_s", "slow_steps")}
        out[name]["path"] = rs[-1]["path"]
    out["speedup"] = out["plain Pyro"]["s_per_step"] / out["zoo"]["s_per_step"]
    return out


def _markdown(rows: list[dict], sizes: Sizes) -> str:
    lines = [
        "| model | particles | zoo path | plain Pyro s/step | zoo (jit = false) s/step | zoo s/step "
        "| speed-up (plain / zoo) | time to first step, plain / zoo (s) | zoo's slow first steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        plain, nojit, zoo = r["plain Pyro"], r["zoo, jit = false"], r["zoo"]
        lines.append(
            f"| `{r['model']}` | {r['particles']} | {zoo['path']} | {plain['s_per_step']:.3g} "
            f"| {nojit['s_per_step']:.3g} | {zoo['s_per_step']:.3g} | {r['speedup']:.1f}x "
            f"| {plain['first_step_s']:.3g} / {zoo['first_step_s']:.3g} | {zoo['slow_steps']:g} |")
    explanation = (
        "Each row times one SVI step (ELBO, gradient, Adam update) on the same float64 data with "
        "an AutoNormal guide: plain Pyro's `SVI` with `Trace_ELBO(num_particles=P)` (particles "
        "in a Python loop, no JIT) against the step `zoo.fit(method=\"svi\")` runs by default, "
        "which traces the ELBO and its gradient once with `torch.jit` (Pyro's `JitTrace_ELBO`), "
        "checks the trace against the plain ELBO at the same parameters and random numbers, and "
        "for P > 1 draws all particles in one pass under a plate; the `jit = false` column "
        "separates what vectorising the particles alone buys. Seconds per step are medians over "
        f"{sizes.repeats} repeats of {sizes.steps} steps after {sizes.warmup} warm-up steps, "
        "contenders interleaved, one seed. Time to first step is set-up plus one step "
        "(for zoo: building the guide, tracing and the check); the slow first steps are those "
        "slower than twice the steady time (the trace, then torch's graph-profiling runs), the "
        "price the JIT path pays once per fit. zoo's step also advances its learning-rate "
        "schedule, which plain Pyro's does not.")
    return "\n".join(lines) + "\n\n" + explanation + "\n"


def run(quick: bool) -> BenchResult:
    """Time SVI steps for every case and particle count; ``quick`` uses tiny step counts."""
    sizes = QUICK if quick else FULL
    with default_dtype(torch.float64):
        # Untimed: the process's first trace and first SVI step pay for lazy imports and
        # torch's JIT start-up, which would otherwise land on the first row.
        _cell(CASES[0], PARTICLES[0], Sizes(warmup=0, steps=1, repeats=1))
        rows = [_cell(case, p, sizes) for case in CASES for p in PARTICLES]
    return BenchResult(
        title="SVI: zoo's JIT-compiled, vectorised ELBO vs plain Pyro SVI (time per step)",
        markdown=_markdown(rows, sizes),
        data={"sizes": vars(sizes), "particles": list(PARTICLES), "rows": rows},
    )
