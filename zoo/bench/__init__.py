"""Benchmarks: ``python -m zoo.bench NAME`` writes ``results/bench/NAME.md`` and ``NAME.json``.

Speed is only ever reported as a ratio against a baseline measured in the same run on the same
machine (never as an absolute timing in a test). Each benchmark module exposes

    run(quick: bool) -> BenchResult

where ``quick`` shrinks every size so the test suite can exercise the code path in seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZooError, unknown

BENCHES = {
    "e2e": "zoo's default MCMC vs Pyro NUTS, NumPyro and Stan, each in a fresh process: ESS per "
           "second from the call to the result",
    "mcmc": "many-chain ChEES-HMC vs Pyro NUTS (and NUTS jit): ESS per second, end to end",
    "svi": "zoo's JIT-compiled vectorised ELBO vs plain Pyro SVI: time per step",
    "grid": "a 16-cell recipe grid, serial vs the local process pool: wall time",
    "bdl": "Bayes by backprop (bnn_mlp) vs a plain PyTorch MLP: time per epoch",
}


@dataclass
class BenchResult:
    """A benchmark's output: a markdown body and the numbers behind it."""

    title: str
    markdown: str  # the body, after the header this module writes
    data: dict[str, Any] = field(default_factory=dict)


def environment() -> dict[str, Any]:
    import os

    import torch

    from ..inference import versions

    return {**versions(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def write(name: str, result: BenchResult, out: Path, settings: dict[str, Any]) -> Path:
    """Write NAME.md and NAME.json under ``out`` atomically (temp file, then rename)."""
    env = environment()
    header = [f"# {result.title}", "",
              f"Written by `python -m zoo.bench {name}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
              "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
              "", "Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()), "", ""]
    out.mkdir(parents=True, exist_ok=True)
    files = {out / f"{name}.md": "\n".join(header) + result.markdown.rstrip() + "\n",
             out / f"{name}.json": json.dumps({"environment": env, "settings": settings,
                                                **result.data}, indent=2, default=float) + "\n"}
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return out / f"{name}.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="; ".join(f"{k}: {v}" for k, v in BENCHES.items()))
    parser.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the code path")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: every contender gets the same one core)")
    args = parser.parse_args(argv)
    try:
        if args.name not in BENCHES:
            raise unknown("benchmark", args.name, BENCHES)
        import torch

        torch.set_num_threads(args.threads)
        module = importlib.import_module(f"{__name__}.{args.name}")
        result = module.run(quick=args.quick)
        path = write(args.name, result, Path(args.out), {"quick": args.quick, "threads": args.threads})
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
