"""NUTS with Pyro's kernel, one chain at a time, recording what diagnostics need.

Chains run sequentially by default (robust everywhere) or in worker processes on request; each
chain gets its own seed ``seed + chain`` so both ways give identical draws. Per draw we record
the sample statistics ArviZ knows: ``diverging``, ``energy`` (for E-BFMI), ``lp``,
``step_size``, ``n_steps``, ``tree_depth``, ``acceptance_rate``.
"""

from __future__ import annotations

import math
import os
import multiprocessing as mp
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Mapping

import numpy as np
import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS

from ..errors import ConvergenceWarning
from .. import tracing
from ..fit import default_dtype
from ..registry import ModelSpec
from .base import INIT_STRATEGIES, RunOutput, freezes_a_value
from .settings import NUTSSettings

_STATS = ("diverging", "energy", "lp", "step_size", "n_steps", "tree_depth", "acceptance_rate")


class RecordingNUTS(NUTS):
    """Pyro's NUTS that keeps per-iteration statistics (Pyro keeps only running means)."""

    def setup(self, warmup_steps, *args, **kwargs):
        super().setup(warmup_steps, *args, **kwargs)
        self.stats: list[dict] = []
        self._n_grad = 0
        potential_fn = self.potential_fn

        def counting_potential(z):
            self._n_grad += 1
            return potential_fn(z)

        self.potential_fn = counting_potential

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self._r_unscaled = r_unscaled
        return r, r_unscaled

    def sample(self, params):
        _, pe_start, _ = self._fetch_from_cache()
        n_div, t, mean_accept = len(self._divergences), self._t, self._mean_accept_prob
        self._n_grad = 0
        z = super().sample(params)
        if pe_start is None:  # first call: the cache was empty, the kernel computed it
            pe_start = self.potential_fn(params)
            self._n_grad -= 1
        _, pe, _ = self._fetch_from_cache()
        n = t + 1 - self._warmup_steps if t >= self._warmup_steps else t + 1
        accept = n * self._mean_accept_prob - (n - 1) * mean_accept  # undo the running mean
        self.stats.append(
            {
                "diverging": len(self._divergences) > n_div,
                # Hamiltonian at the start of the transition (fresh momentum), as for E-BFMI
                "energy": float(pe_start + self._kinetic_energy(self._r_unscaled)),
                "lp": -float(pe),
                "step_size": float(self.step_size),
                "n_steps": self._n_grad,
                "tree_depth": int(math.ceil(math.log2(self._n_grad + 1))) if self._n_grad else 0,
                "acceptance_rate": float(accept),
                "warmup": t < self._warmup_steps,
            }
        )
        return z


def _run_chain(spec: ModelSpec, data: Mapping, config: NUTSSettings, seed: int, chain: int,
               progress: bool, dtype: torch.dtype):
    """One chain; a module-level function so worker processes can run it. With ``jit`` Pyro
    traces the potential with torch.jit (2-3x faster for small models); a model the tracer
    cannot handle runs eagerly instead, with a warning, as chees does."""
    if not config.jit:
        return _sample_chain(spec, data, config, seed, chain, progress, dtype, False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            out = _sample_chain(spec, data, config, seed, chain, progress, dtype, True)
        frozen = [w for w in caught if freezes_a_value(w)]
        if frozen:  # the trace kept a value the model computed from a tensor: wrong draws
            w = frozen[0]
            raise RuntimeError(f"{os.path.basename(w.filename)}:{w.lineno}: {w.message}")
        for w in caught:
            if not issubclass(w.category, torch.jit.TracerWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out
    except Exception as e:
        warnings.warn(f"{spec.name} nuts: the JIT-compiled potential cannot be used "
                      f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); "
                      "running eagerly (jit = false)", RuntimeWarning, stacklevel=2)
        return _sample_chain(spec, data, config, seed, chain, progress, dtype, False)


def _sample_chain(spec: ModelSpec, data: Mapping, config: NUTSSettings, seed: int, chain: int,
                  progress: bool, dtype: torch.dtype, jit: bool):
    with default_dtype(dtype):
        pyro.set_rng_seed(seed + chain)
        kernel = RecordingNUTS(
            spec.fn,
            target_accept_prob=config.target_accept,
            max_tree_depth=config.max_tree_depth,
            init_strategy=INIT_STRATEGIES[config.init_strategy],
            jit_compile=jit,
            ignore_jit_warnings=False,  # _run_chain reads them
            full_mass=config.dense_mass,
            # Pyro would guess it from a prior draw, which an improper prior cannot give
            max_plate_nesting=tracing.max_plate_nesting(tracing.structure(spec.fn, data)),
        )
        mcmc = MCMC(
            kernel,
            num_samples=config.num_samples,
            warmup_steps=config.num_warmup,
            num_chains=1,
            disable_progbar=not progress,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.tensor results are registered as constants.*")
            mcmc.run(**data)
        samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
        stats = [s for s in kernel.stats if not s["warmup"]]
        return samples, {k: np.array([s[k] for s in stats]) for k in _STATS}


def run_nuts(spec: ModelSpec, data: Mapping, config: NUTSSettings, seed: int = 0,
             progress: bool = False) -> RunOutput:
    dtype = torch.get_default_dtype()
    args = [(spec, data, config, seed, c, progress and not config.parallel, dtype)
            for c in range(config.num_chains)]
    if config.parallel and config.num_chains > 1:
        # spawn, not fork: forking a process that holds torch threads can deadlock.
        with ProcessPoolExecutor(config.num_chains, mp_context=mp.get_context("spawn")) as pool:
            chains = list(pool.map(_run_chain, *zip(*args)))
    else:
        chains = [_run_chain(*a) for a in args]
    latents = {k: torch.stack([c[0][k] for c in chains]) for k in chains[0][0]}
    stats = {k: np.stack([c[1][k] for c in chains]) for k in _STATS}
    out_warnings = []
    n_div = int(stats["diverging"].sum())
    if n_div:
        out_warnings.append(
            f"{n_div} divergent transitions after warmup ({n_div / stats['diverging'].size:.1%}); "
            "the posterior is not explored reliably (reparameterise, e.g. non-centered, or raise target_accept)"
        )
    hit = int((stats["tree_depth"] >= config.max_tree_depth).sum())
    if hit:
        out_warnings.append(f"{hit} transitions hit max_tree_depth={config.max_tree_depth}")
    for w in out_warnings:
        warnings.warn(f"{spec.name} nuts: {w}", ConvergenceWarning, stacklevel=3)
    info = {"num_divergences": n_div, "mean_step_size": float(stats["step_size"].mean())}
    return RunOutput(latents, stats, info, out_warnings)
