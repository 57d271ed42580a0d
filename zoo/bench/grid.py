"""Wall time of a 16-cell recipe grid: the serial executor against the local process pool.

The grid is eight schools (non-centered) with NUTS, one chain each, over 16 seeds: cells of
equal, CPU-bound work. Both runs go through ``python -m zoo.run``'s own code (``run.main``) with
``--rerun``, so every cell is computed; the pool's time includes starting its workers. With one
torch thread per worker the speed-up should approach the number of cores, less that start-up.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from . import BenchResult

RECIPE = """\
[recipe]
name = "bench_grid"
description = "A benchmark grid: eight schools with NUTS over {cells} seeds."

[data]
dataset = "eight_schools"

[[models]]
name = "eight_schools_noncentered"

[inference]
methods = ["nuts"]

[inference.nuts]
num_warmup = {draws}
num_samples = {draws}
num_chains = 1

[grid]
seed = "0..{last}"
"""


def run(quick: bool = False) -> BenchResult:
    from ..run import main

    cells, draws = (4, 30) if quick else (16, 400)
    workers = os.cpu_count() or 1
    times, summaries = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "bench_grid.toml"
        recipe.write_text(RECIPE.format(cells=cells, draws=draws, last=cells - 1))
        for executor in ("serial", "local"):
            out = Path(tmp) / executor
            start = time.perf_counter()
            code = main([str(recipe), "--executor", executor, "--workers", str(workers),
                         "--threads", "1", "--rerun", "--quiet", "--out", str(out)])
            times[executor] = time.perf_counter() - start
            if code != 0:
                raise RuntimeError(f"the {executor} run of the benchmark grid exited with {code}")
            summaries[executor] = (out / "bench_grid" / "summary.csv").read_bytes()
    speedup = times["serial"] / times["local"]
    same = summaries["serial"] == summaries["local"]
    md = "\n".join([
        __doc__.split("\n\n", 1)[1].strip(), "",
        f"{cells} cells ({draws} warmup + {draws} draws each); {workers} cores; local pool of "
        f"{workers} workers with 1 torch thread each.", "",
        "| executor | wall time (s) | speed-up vs serial |", "|---|---|---|",
        f"| serial | {times['serial']:.1f} | 1.0x |",
        f"| local | {times['local']:.1f} | {speedup:.2f}x |", "",
        f"summary.csv identical between the two runs: {'yes' if same else '**no**'}.",
    ])
    return BenchResult("Recipe grid: serial vs the local process pool", md,
                       {"cells": cells, "workers": workers, "seconds": times,
                        "speedup": speedup, "identical": same})
