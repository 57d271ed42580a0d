"""ESS per second from the call to the result: zoo's default MCMC (many-chain ChEES-HMC)
against Pyro's NUTS, with and without JIT, on the three models of issue 5, in one run on one
core.

ESS/s = the smallest bulk ESS over every latent coordinate (ArviZ) divided by the seconds from
the call to the draws: tracing/compiling, warmup and sampling all count (an earlier version
divided by the sampling phase alone, which flattered the many-chain sampler: its warmup is
most of its time). Pyro runs as its docs show (``MCMC(NUTS(model))``, one chain, 1000 warmup +
1000 draws); zoo runs ``zoo.fit(model, data, method="mcmc")`` at its defaults. Everything in
float64 on the same prepared data. Peers beyond Pyro (NumPyro, Stan) are in ``bench e2e``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS

from .. import diagnostics
from ..fit import default_dtype
from ..inference import fit, resolve
from ..registry import load_dataset
from . import BenchResult

MODELS = (  # (label, model, dataset, dataset args)
    ("eight schools non-centered", "eight_schools_noncentered", "eight_schools", {}),
    ("logistic regression, D=25, N=1000", "logistic_regression", "logistic_synthetic",
     {"n": 1000, "d": 25, "seed": 0}),
    ("hierarchical linear (radon-like), 85 groups, N=900", "hierarchical_linear", "radon_synthetic",
     {"num_groups": 85, "n": 900, "seed": 0}),
)
TARGET = 10.0  # ESS/s of zoo's default over Pyro NUTS jit


def min_ess(posterior: dict[str, np.ndarray], names: list[str]) -> float:
    """Smallest bulk ESS over every scalar coordinate of the latent sites."""
    return min(diagnostics.ess(values[(slice(None), slice(None)) + idx])
               for n in names for values in [posterior[n]]
               for idx in np.ndindex(*values.shape[2:]))


def run_pyro(model: str, data: dict, jit: bool, warmup: int, draws: int, seed: int) -> dict:
    spec, prepared = resolve(model, data)
    times: dict[str, float] = {}

    def hook(kernel, params, stage, i):  # called after every iteration
        if stage == "Warmup" and i == warmup - 1:
            times["warmup_end"] = time.perf_counter()

    with default_dtype(torch.float64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        kernel = NUTS(spec.fn, jit_compile=jit, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=1,
                    disable_progbar=True, hook_fn=hook)
        start = time.perf_counter()
        mcmc.run(**prepared)
        end = time.perf_counter()
    samples = {k: v.detach().numpy()[None] for k, v in mcmc.get_samples().items()}
    warm_end = times.get("warmup_end", start)
    return {"ess": min_ess(samples, list(samples)), "first_result_s": warm_end - start,
            "sampling_s": end - warm_end}


def run_zoo(model: str, data: dict, seed: int, **settings) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(model, data, method="mcmc", seed=seed, **settings)
    info = f.info
    return {"ess": min_ess(f.posterior, f.latent_names), "sampling_s": info["time_sampling_s"],
            "first_result_s": info["time_setup_s"] + info["time_warmup_s"], "method": f.method,
            "chains": f.num_chains, "draws": f.num_draws, "steps": info["mean_leapfrog_steps"],
            "step_size": info["step_size"], "log_density": info["log_density"],
            "converged": f.converged, "divergences": info["num_divergences"]}


def run(quick: bool = False) -> BenchResult:
    warmup = draws = 50 if quick else 1000
    zoo_settings = {"num_chains": 16, "num_warmup": 60, "num_samples": 20} if quick else {}
    rows = []
    for label, model, dataset, args in MODELS:
        if quick and model != "eight_schools_noncentered":
            continue
        data = load_dataset(dataset, **args)
        ours = run_zoo(model, data, seed=0, **zoo_settings)
        plain = run_pyro(model, data, jit=False, warmup=warmup, draws=draws, seed=0)
        jit = run_pyro(model, data, jit=True, warmup=warmup, draws=draws, seed=0)
        rate = {k: r["ess"] / (r["first_result_s"] + r["sampling_s"]) for k, r in
                {"zoo": ours, "pyro": plain, "pyro_jit": jit}.items()}
        rows.append({"label": label, "model": model, "zoo": ours, "pyro": plain, "pyro_jit": jit,
                     "ess_per_s": rate, "speedup_vs_jit": rate["zoo"] / rate["pyro_jit"],
                     "speedup_vs_pyro": rate["zoo"] / rate["pyro"]})
    return BenchResult("MCMC: ESS per second, zoo's default sampler vs Pyro NUTS",
                       _markdown(rows, warmup, draws), {"rows": rows, "target": TARGET})


def _markdown(rows: list[dict], warmup: int, draws: int) -> str:
    lines = [__doc__.split("\n\n", 1)[1].strip(), "",
             f"Pyro: 1 chain, {warmup} warmup + {draws} draws. zoo: "
             + (f"{rows[0]['zoo']['chains']} chains x {rows[0]['zoo']['draws']} draws "
                f"(method {rows[0]['zoo']['method']}, log density by {rows[0]['zoo']['log_density']})"
                if rows else ""), "",
             "## ESS per second from the call to the draws (min bulk ESS over all coordinates)", "",
             "| model | Pyro NUTS | Pyro NUTS jit | zoo (chees) | zoo / Pyro jit | target |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        e = r["ess_per_s"]
        ok = "met" if r["speedup_vs_jit"] >= TARGET else "**missed**"
        lines.append(f"| {r['label']} | {e['pyro']:.1f} | {e['pyro_jit']:.1f} | {e['zoo']:.0f} | "
                     f"{r['speedup_vs_jit']:.0f}x | >= {TARGET:.0f}x: {ok} |")
    lines += ["", "## Time to the first valid result (trace/compile + warmup), and the raw numbers", "",
              "| model | sampler | first result (s) | sampling (s) | min bulk ESS | notes |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        z = r["zoo"]
        for key, name, note in (
                ("pyro", "Pyro NUTS", ""), ("pyro_jit", "Pyro NUTS jit", ""),
                ("zoo", "zoo chees", f"{z['steps']:.1f} leapfrog steps/draw, step size "
                 f"{z['step_size']:.3g}, {z['divergences']} divergences, "
                 f"converged: {z['converged']}")):
            x = r[key]
            lines.append(f"| {r['label']} | {name} | {x['first_result_s']:.1f} | "
                         f"{x['sampling_s']:.2f} | {x['ess']:.0f} | {note} |")
    lines += ["", "NumPyro and Stan, each in a fresh process on plain one-draw models: "
              "`python -m zoo.bench e2e` (results/bench/e2e.md)."]
    return "\n".join(lines)
