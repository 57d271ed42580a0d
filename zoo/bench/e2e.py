"""End to end: seconds from the inference call to draws in hand, and ESS per second of that.

Each contender runs in its own fresh process (``python -m zoo.bench.e2e --worker ...``), one
after another on the same machine, on the models of ``e2e_models`` written as plain one-draw
models in each language:

* **zoo**: ``zoo.fit(model, data)`` at its defaults, to the returned ``Fit`` (checks included),
  in a fresh process (every import and recording inside the call); a second call in the same
  process (``warm``) is reported apart;
* **Pyro NUTS (jit)**: ``MCMC(NUTS(model, jit_compile=True))``, 1 chain, 1000 warmup + 1000
  draws (4 chains would take four times as long for the same rate), seed 0 only and at most
  4 minutes (``TIMEOUT``): it is the baseline zoo replaces, not a target;
* **NumPyro** (with the ``zoo[peers]`` extra): 4 chains vectorised, 1000 + 1000, float64,
  the first call (JAX compilation inside);
* **Stan** (pystan, with ``zoo[peers]``): 4 chains, 1000 + 1000; the build (compiled once,
  cached by httpstan) is timed apart and not counted.

SVI the same way: ``zoo.fit(model, data, method="svi")`` against NumPyro's SVI with the same
guide family, optimiser, schedule and steps (``svi_markdown``).

ESS = min over every latent coordinate of min(bulk, tail) ESS, from the same ArviZ call for every
contender; ESS/s = ESS / wall. Medians over seeds. zoo's means must lie within 4 combined MCSE
and its sds within 10% of Stan's (same run), on every coordinate.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import BenchResult

CONTENDERS = ("zoo", "pyro_nuts", "numpyro", "stan")
LABELS = {"zoo": "zoo", "pyro_nuts": "Pyro NUTS (jit)", "numpyro": "NumPyro", "stan": "Stan"}
WARMUP = DRAWS = 1000
PEER_CHAINS = 4
MARK = "E2E_RESULT "
# Pyro NUTS is the baseline the zoo replaces, not a target: one seed, and at most 4 minutes
# (at tree depth 10 on the uncentred-years ridge or the latent GP it would take tens of minutes)
TIMEOUT = {"pyro_nuts": 240}


# -- summaries, the same for every contender -----------------------------------------------

def summarise(draws: dict[str, np.ndarray]) -> dict[str, Any]:
    """min(bulk, tail) ESS over every coordinate and each coordinate's mean, sd and MCSE, from
    one ArviZ call on draws ``name -> (chain, draw, *shape)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        s = az.summary(az.convert_to_dataset({k: np.asarray(v, float) for k, v in draws.items()}),
                       kind="all", round_to="none")
    return {"ess": float(np.nanmin(np.minimum(s["ess_bulk"], s["ess_tail"]))),
            "ess_bulk": float(s["ess_bulk"].min()), "ess_tail": float(s["ess_tail"].min()),
            "coords": {k: [float(r["mean"]), float(r["sd"]), float(r["mcse_mean"])]
                       for k, r in s.iterrows()}}


# -- workers: one contender, one model, one seed, in this process -------------------------

def run_zoo(name: str, seed: int, quick: bool) -> dict:
    import zoo
    from .e2e_models import MODELS

    m = MODELS[name]
    settings = {"target_ess": 200, "max_samples": 200} if quick else {}
    out: dict[str, Any] = {}
    for phase, s in (("cold", seed), ("warm", seed + 1000)):
        data = m.data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fit = zoo.fit(m.pyro, data, seed=s, **settings)
            wall = time.perf_counter() - start
        i = fit.info
        out[phase] = {"wall": wall, "method": fit.method, "converged": fit.converged,
                      "fallback": i.get("fallback"), "log_density": i.get("log_density"),
                      "chains": fit.num_chains, "draws": fit.num_draws, "threads": i.get("threads"),
                      "divergences": int(fit.sample_stats["diverging"].sum()),
                      "grads_warmup": i.get("gradients_warmup"),
                      "grads_sampling": i.get("gradients_sampling"),
                      "warmup_iterations": i.get("warmup_iterations"), "metric": i.get("metric"),
                      "setup_s": i.get("time_setup_s"), "warmup_s": i.get("time_warmup_s"),
                      "sampling_s": i.get("time_sampling_s"),
                      "post_s": wall - sum(i.get(k, 0.0) for k in
                                           ("time_setup_s", "time_warmup_s", "time_sampling_s")),
                      **summarise({n: fit.posterior[n] for n in fit.latent_names})}
    return {**out["cold"], "warm": out["warm"]}


def run_pyro_nuts(name: str, seed: int, quick: bool) -> dict:
    import pyro
    import torch

    from ..inference.mcmc import RecordingNUTS
    from .e2e_models import MODELS

    torch.set_default_dtype(torch.float64)
    m = MODELS[name]
    data = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in m.data().items()}
    data = {k: v.double() if torch.is_tensor(v) and k == "y" else v for k, v in data.items()}
    n = 100 if quick else WARMUP
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro.set_rng_seed(seed)
        start = time.perf_counter()
        kernel = RecordingNUTS(m.pyro, jit_compile=True, ignore_jit_warnings=True)
        mcmc = pyro.infer.MCMC(kernel, num_samples=n, warmup_steps=n, num_chains=1,
                               disable_progbar=True)
        mcmc.run(**data)
        wall = time.perf_counter() - start
    steps = np.array([s["n_steps"] for s in kernel.stats])
    warm = np.array([s["warmup"] for s in kernel.stats])
    draws = {k: v.detach().numpy()[None] for k, v in mcmc.get_samples().items()}
    return {"wall": wall, "chains": 1, "draws": n, "grads_warmup": int(steps[warm].sum()),
            "grads_sampling": int(steps[~warm].sum()),
            "divergences": int(sum(s["diverging"] for s in kernel.stats if not s["warmup"])),
            **summarise(draws)}


def run_numpyro(name: str, seed: int, quick: bool) -> dict:
    import jax
    import numpyro
    from numpyro.infer import MCMC, NUTS

    from .e2e_models import MODELS

    numpyro.enable_x64()
    m = MODELS[name]
    n = 100 if quick else WARMUP
    start = time.perf_counter()
    mcmc = MCMC(NUTS(m.numpyro), num_warmup=n, num_samples=n, num_chains=PEER_CHAINS,
                chain_method="vectorized", progress_bar=False)
    key = jax.random.PRNGKey(seed)
    data = m.data()
    mcmc.warmup(key, **data, extra_fields=("num_steps",), collect_warmup=True)
    grads_warmup = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    mcmc.run(mcmc.post_warmup_state.rng_key, **data, extra_fields=("num_steps", "diverging"))
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    wall = time.perf_counter() - start
    extra = mcmc.get_extra_fields()
    return {"wall": wall, "chains": PEER_CHAINS, "draws": n, "grads_warmup": grads_warmup,
            "grads_sampling": int(np.asarray(extra["num_steps"]).sum()),
            "divergences": int(np.asarray(extra["diverging"]).sum()),
            **summarise({k: np.asarray(v) for k, v in samples.items()})}


def run_stan(name: str, seed: int, quick: bool) -> dict:
    import stan

    from .e2e_models import MODELS, stan_data

    m = MODELS[name]
    n = 100 if quick else WARMUP
    t0 = time.perf_counter()
    posterior = stan.build(m.stan, data=stan_data(name, m.data()), random_seed=seed)
    t1 = time.perf_counter()
    fit = posterior.sample(num_chains=PEER_CHAINS, num_samples=n, num_warmup=n, save_warmup=True)
    wall = time.perf_counter() - t1
    leapfrog = fit["n_leapfrog__"].reshape(PEER_CHAINS, 2 * n)  # chain-major, warmup first
    draws = {}
    for p in fit.param_names:
        idx = fit._parameter_indexes(p)
        x = fit._draws[idx, n:, :]  # (k, draw, chain), after warmup
        draws[p] = np.transpose(x, (2, 1, 0)).reshape(PEER_CHAINS, n, *fit.dims[
            fit.param_names.index(p)], order="C") if fit.dims[fit.param_names.index(p)] else \
            x[0].T
    divergent = fit["divergent__"].reshape(PEER_CHAINS, 2 * n)[:, n:]
    return {"wall": wall, "build_s": t1 - t0, "chains": PEER_CHAINS, "draws": n,
            "grads_warmup": int(leapfrog[:, :n].sum()), "grads_sampling": int(leapfrog[:, n:].sum()),
            "divergences": int(divergent.sum()), **summarise(draws)}


def run_zoo_svi(name: str, seed: int, quick: bool) -> dict:
    import zoo
    from .e2e_models import MODELS

    m = MODELS[name]
    settings = {"num_steps": 400, "window": 100} if quick else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        fit = zoo.fit(m.pyro, m.data(), method="svi", seed=seed, **settings)
        wall = time.perf_counter() - start
    return {"wall": wall, "steps": fit.info["num_steps_run"], "converged": fit.converged,
            "coords": _moments({n: fit.posterior[n] for n in fit.latent_names})}


def run_numpyro_svi(name: str, seed: int, quick: bool) -> dict:
    """NumPyro's SVI as zoo's default: AutoNormal (init_scale 0.1), Adam at 0.01 decaying
    exponentially to 0.001 over 5000 steps, Trace_ELBO, 1 particle; ``svi.run`` runs all
    steps in one compiled loop, so the step at which zoo's stopping rule would have fired is
    reported beside the time for all of them."""
    import jax
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ..inference.settings import SVISettings
    from ..inference.svi import _trend
    from .e2e_models import MODELS

    numpyro.enable_x64()
    m, cfg = MODELS[name], SVISettings()
    steps, window = (400, 100) if quick else (cfg.num_steps, cfg.window)
    schedule = lambda i: cfg.lr * cfg.lr_decay ** (i / steps)  # noqa: E731 - as zoo's
    start = time.perf_counter()
    guide = AutoNormal(m.numpyro, init_scale=cfg.init_scale)
    svi = SVI(m.numpyro, guide, numpyro.optim.Adam(schedule), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(seed), steps, **m.data(), progress_bar=False)
    draws = guide.sample_posterior(jax.random.PRNGKey(seed + 1), result.params,
                                   sample_shape=(cfg.num_samples,))
    jax.block_until_ready(draws)
    wall = time.perf_counter() - start
    losses = np.asarray(result.losses, dtype=float)
    converged_at = next((k for k in range(2 * window, steps + 1, window)
                         if _trend(list(losses[:k]), window)[0] < cfg.tol), None)
    return {"wall": wall, "steps": steps, "converged_at": converged_at,
            "coords": _moments({k: np.asarray(v)[None] for k, v in draws.items()})}


def _moments(draws: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Each coordinate's mean and sd, named as ArviZ names them (``beta[3]``)."""
    out = {}
    for k, v in draws.items():
        flat = np.asarray(v, dtype=float).reshape(-1, *np.shape(v)[2:])
        for idx in np.ndindex(*flat.shape[1:]):
            name = f"{k}[{','.join(map(str, idx))}]" if idx else k
            x = flat[(slice(None),) + idx]
            out[name] = [float(x.mean()), float(x.std())]
    return out


WORKERS = {"zoo": run_zoo, "pyro_nuts": run_pyro_nuts, "numpyro": run_numpyro, "stan": run_stan,
           "zoo_svi": run_zoo_svi, "numpyro_svi": run_numpyro_svi}


def available(contender: str) -> bool:
    module = {"numpyro": "numpyro", "numpyro_svi": "numpyro", "stan": "stan"}.get(contender)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


CACHE = Path("results/bench/.e2e-cache")  # gitignored: a stopped run resumes from here


def code_hash() -> str:
    """Hash of every zoo source file: a cached worker result counts only for the same code."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


def spawn(contender: str, name: str, seed: int, quick: bool, timeout: float = 900) -> dict:
    """One worker in a fresh process (or its cached result from an earlier, stopped run of
    the same code), with the process's own wall time."""
    key = CACHE / f"{contender}-{name}-{seed}{'-quick' if quick else ''}-{code_hash()}.json"
    if not quick and key.exists():
        return json.loads(key.read_text())
    result = _spawn(contender, name, seed, quick, timeout)
    if not quick and "error" not in result:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=float))
        tmp.replace(key)
    return result


def _spawn(contender: str, name: str, seed: int, quick: bool, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "zoo.bench.e2e", "--worker", contender, name, str(seed)]
    if quick:
        cmd.append("--quick")
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    process_s = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    return {**json.loads(lines[-1][len(MARK):]), "process_s": process_s}


# -- the benchmark ------------------------------------------------------------------------

def run(quick: bool = False, seeds: tuple[int, ...] = (0, 1, 2)) -> BenchResult:
    from .e2e_models import MODELS

    names = ["eight_schools"] if quick else list(MODELS)
    contenders = ["zoo"] if quick else [c for c in CONTENDERS if available(c)]
    seeds = seeds[:1] if quick else seeds
    runs = {(c, n): [spawn(c, n, s, quick, timeout=TIMEOUT.get(c, 900))
                     for s in (seeds[:1] if c == "pyro_nuts" else seeds)]
            for n in names for c in contenders}
    rows = {key: median_row(rs) for key, rs in runs.items()}
    svi_contenders = ["zoo_svi"] if quick else [c for c in ("zoo_svi", "numpyro_svi") if available(c)]
    svi = {(c, n): [spawn(c, n, s, quick) for s in seeds] for n in names for c in svi_contenders}
    text = markdown(rows, names, contenders, seeds) + "\n\n" + svi_markdown(svi, names)
    return BenchResult("End to end: ESS per second from the call to the result", text,
                       {"runs": {f"{c}/{n}": rs for (c, n), rs in {**runs, **svi}.items()},
                        "medians": {f"{c}/{n}": r for (c, n), r in rows.items()}})


def svi_markdown(svi: dict, names: list[str]) -> str:
    """SVI: wall to the returned fit (zoo stops by its ELBO rule; NumPyro runs every step in one
    compiled loop) and the largest difference of the two guides' means, in posterior sds."""
    from .e2e_models import MODELS

    lines = ["## SVI: zoo's default against NumPyro's", "",
             "Same guide family (mean-field normal, `AutoNormal`, init scale 0.1), Adam at 0.01 "
             "decaying to 0.001 over 5000 steps, one particle, float64, first call in a fresh "
             "process. zoo stops when the mean ELBO changes by less than 1e-4 (relative) between "
             "two 200-step windows; NumPyro runs all 5000 steps, and the step where the same "
             "rule would have stopped it is given. Medians over seeds.", "",
             "| model | zoo wall (s) | zoo steps | NumPyro wall (s), all steps | NumPyro: rule met at "
             "step | zoo / NumPyro time | max mean difference (zoo sd) |", "|---" * 7 + "|"]
    for n in names:
        z = [r for r in svi.get(("zoo_svi", n), []) if "error" not in r]
        p = [r for r in svi.get(("numpyro_svi", n), []) if "error" not in r]
        if not z:
            err = next((r["error"] for r in svi.get(("zoo_svi", n), []) if "error" in r), "not run")
            lines.append(f"| {MODELS[n].label} | error: {err} | | | | | |")
            continue
        zw, zs = statistics.median(r["wall"] for r in z), statistics.median(r["steps"] for r in z)
        cells = [f"{zw:.2f}", f"{zs:.0f}"]
        if p:
            pw = statistics.median(r["wall"] for r in p)
            at = [r["converged_at"] for r in p if r["converged_at"] is not None]
            diff = max(abs(m1 - m2) / sd for k, (m1, sd) in z[0]["coords"].items()
                       if k in p[0]["coords"] for m2 in [p[0]["coords"][k][0]])
            cells += [f"{pw:.2f}", f"{statistics.median(at):.0f}" if at else "not met",
                      f"{zw / pw:.2f}", f"{diff:.2f}"]
        else:
            cells += ["", "", "", ""]
        lines.append(f"| {MODELS[n].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def median_row(results: list[dict]) -> dict:
    good = [r for r in results if "error" not in r]
    if not good:
        return {"error": results[0]["error"]}
    out: dict[str, Any] = {"seeds_ok": len(good), "errors": [r["error"] for r in results if "error" in r]}
    for key in ("wall", "ess", "grads_warmup", "grads_sampling", "divergences", "process_s",
                "build_s", "setup_s", "warmup_s", "sampling_s", "post_s", "chains", "draws",
                "warmup_iterations"):
        values = [r[key] for r in good if r.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    out["ess_per_s"] = statistics.median(r["ess"] / r["wall"] for r in good)
    if "warm" in good[0]:
        out["warm_wall"] = statistics.median(r["warm"]["wall"] for r in good)
        out["warm_ess_per_s"] = statistics.median(r["warm"]["ess"] / r["warm"]["wall"] for r in good)
    for key in ("converged", "method", "fallback", "log_density", "metric", "threads"):
        if key in good[0]:
            out[key] = [r.get(key) for r in good]
    out["coords"] = good[0]["coords"]  # the first seed's, for the side-by-side check
    return out


def agreement(zoo_row: dict, stan_row: dict) -> dict:
    """Worst |mean difference| in combined MCSE and worst |sd ratio - 1| over coordinates."""
    z_max, sd_max, worst = 0.0, 0.0, ""
    for k, (mean, sd, mcse) in zoo_row["coords"].items():
        if k not in stan_row["coords"]:
            continue
        m2, sd2, mcse2 = stan_row["coords"][k]
        z = abs(mean - m2) / np.hypot(mcse, mcse2)
        if z > z_max:
            z_max, worst = z, k
        sd_max = max(sd_max, abs(sd / sd2 - 1))
    return {"max_z": z_max, "worst": worst, "max_sd_dev": sd_max,
            "ok": bool(z_max < 4 and sd_max < 0.10)}


def markdown(rows: dict, names: list[str], contenders: list[str], seeds) -> str:
    from .e2e_models import MODELS

    lines = [__doc__.split("\n\n", 1)[1].strip(), "", f"Seeds: {', '.join(map(str, seeds))} "
             "(medians).", "", "## End-to-end ESS per second", "",
             "| model | " + " | ".join(LABELS[c] for c in contenders)
             + (" | zoo / Stan | zoo / NumPyro |" if "stan" in contenders else " |"),
             "|---" * (len(contenders) + 1 + (2 if "stan" in contenders else 0)) + "|"]
    for n in names:
        cells = []
        for c in contenders:
            r = rows[(c, n)]
            cells.append("error" if "error" in r else f"{r['ess_per_s']:.0f} ({r['wall']:.2f} s, "
                         f"ESS {r['ess']:.0f})")
        ratio = []
        z = rows[("zoo", n)]
        for peer, target in (("stan", 1.0), ("numpyro", 3.0)):
            p = rows.get((peer, n))
            if p is None or "error" in p or "error" in z:
                continue
            x = z["ess_per_s"] / p["ess_per_s"]
            ratio.append(f"{x:.2f}x ({'met' if x >= target else '**short**'}: >= {target:g}x)")
        lines.append(f"| {MODELS[n].label} | " + " | ".join(cells)
                     + (" | " + " | ".join(ratio) if ratio else "") + " |")
    lines += ["", "## zoo: where the time goes (medians; the cold call in a fresh process)", "",
              "| model | wall (s) | set-up | warmup | sampling | after | warm call (s) | warm ESS/s "
              "| chains | threads | warmup iterations | gradients warmup / sampling | metric | "
              "converged | fallback |", "|---" * 15 + "|"]
    for n in names:
        z = rows[("zoo", n)]
        if "error" in z:
            lines.append(f"| {MODELS[n].label} | error: {z['error']} |" + " |" * 13)
            continue
        lines.append(
            f"| {MODELS[n].label} | {z['wall']:.2f} | {z['setup_s']:.2f} | {z['warmup_s']:.2f} | "
            f"{z['sampling_s']:.2f} | {z['post_s']:.2f} | {z['warm_wall']:.2f} | "
            f"{z['warm_ess_per_s']:.0f} | {z['chains']:.0f} | {_set(z['threads'])} | "
            f"{z['warmup_iterations']:.0f} | {z['grads_warmup']:.0f} / {z['grads_sampling']:.0f} | "
            f"{_set(z['metric'])} | {_set(z['converged'])} | {_set(z['fallback'])} |")
    lines += ["", "## Every contender: wall, ESS and gradients (medians)", "",
              "| model | contender | wall (s) | process (s) | ESS | gradients warmup / sampling | "
              "divergences | build (s) |", "|---" * 8 + "|"]
    for n in names:
        for c in contenders:
            r = rows[(c, n)]
            if "error" in r:
                lines.append(f"| {MODELS[n].label} | {LABELS[c]} | error: {r['error']} | | | | | |")
                continue
            lines.append(f"| {MODELS[n].label} | {LABELS[c]} | {r['wall']:.2f} | "
                         f"{r['process_s']:.1f} | {r['ess']:.0f} | {r['grads_warmup']:.0f} / "
                         f"{r['grads_sampling']:.0f} | {r['divergences']:.0f} | "
                         f"{r['build_s']:.1f} |" if "build_s" in r else
                         f"| {MODELS[n].label} | {LABELS[c]} | {r['wall']:.2f} | "
                         f"{r['process_s']:.1f} | {r['ess']:.0f} | {r['grads_warmup']:.0f} / "
                         f"{r['grads_sampling']:.0f} | {r['divergences']:.0f} | |")
    if "stan" in contenders:
        lines += ["", "## zoo against Stan, coordinate by coordinate (first seed)", "",
                  "Means within 4 combined MCSE and sds within 10% on every coordinate.", "",
                  "| model | worst mean difference (combined MCSE) | at | worst sd deviation | ok |",
                  "|---|---|---|---|---|"]
        for n in names:
            z, s = rows[("zoo", n)], rows[("stan", n)]
            if "error" in z or "error" in s:
                continue
            a = agreement(z, s)
            lines.append(f"| {MODELS[n].label} | {a['max_z']:.2f} | {a['worst']} | "
                         f"{a['max_sd_dev']:.1%} | {'yes' if a['ok'] else '**no**'} |")
        lines += ["", "### Posterior means and sds of the scalar parameters", "",
                  "| model | parameter | " + " | ".join(LABELS[c] for c in contenders) + " |",
                  "|---" * (len(contenders) + 2) + "|"]
        for n in names:
            first = rows[(contenders[0], n)]
            if "error" in first:
                continue
            for k in [k for k in first["coords"] if "[" not in k]:
                cells = []
                for c in contenders:
                    r = rows[(c, n)]
                    v = None if "error" in r else r["coords"].get(k)
                    cells.append("" if v is None else f"{v[0]:.4g} ± {v[1]:.3g}")
                lines.append(f"| {MODELS[n].label} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _set(values) -> str:
    return ", ".join(str(v) for v in dict.fromkeys(values if isinstance(values, list) else [values]))


def _worker(argv: list[str]) -> int:
    contender, name, seed = argv[0], argv[1], int(argv[2])
    result = WORKERS[contender](name, seed, "--quick" in argv)
    print(MARK + json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker(sys.argv[2:]))
    from . import main

    sys.exit(main(["e2e", *sys.argv[1:]]))
