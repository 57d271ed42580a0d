"""Recipe grids: expansion, one cell per fit, identical results on every executor, resuming
after SIGKILL and SIGINT, failures that do not lose the other cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo import run
from zoo.errors import ZooError
from zoo.grid import expand, toml_literal

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "tests" / "grid_recipes"
TINY = str(GRIDS / "tiny_grid.toml")  # 4 seeds x (laplace, chees) = 8 cells
SLOW = str(GRIDS / "slow_grid.toml")  # 6 NUTS cells of about a second each


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _stored(out: Path, name: str) -> int:
    """Cells finished and stored (a cell folder appears only when complete).

    A cell is written in a hidden ``.KEY.tmp-*`` folder and then renamed; ``glob("*")`` matches
    hidden names too, so skip them, or a cell caught between its write and its rename counts
    although an interrupt there (rightly) discards it.
    """
    return sum(1 for p in (out / ".cells" / name).glob("*/cell.json")
               if not p.parent.name.startswith(".")
               and json.loads(p.read_text())["status"] == "done")


def _ran(stderr: str) -> int:
    line = next(line for line in stderr.splitlines() if line.startswith("cells:"))
    return int(line.split(",")[2].split()[0])  # "cells: N in all, K already stored, R run now, ..."


def test_grid_expands_to_points_and_check_counts_cells(capsys):
    points = expand(TINY)
    assert [p.values for p in points] == [(("seed", s),) for s in range(4)]
    assert [p.recipe.seed for p in points] == [0, 1, 2, 3]
    assert run.main([TINY, "--check"]) == 0
    assert "cells: 8 (4 points x 2 fits)" in capsys.readouterr().out
    assert toml_literal({"a": [1, 2.5, "x", True]}) == '{"a" = [1, 2.5, "x", true]}'


@pytest.mark.parametrize("grid,match", [
    ('seed = "3..1"', "range '3..1' is empty"),
    ('seed = "a..b"', "expected an array or an integer range"),
    ("seed = []", "expected a non-empty array"),
    ('models = ["normal_normal"]', "models are listed in \\[\\[models\\]\\], not gridded"),
    ("nope = [1, 2]", "grid point nope=1 .*has no argument 'nope'"),
    ('"inference.laplace.adam_steps" = [10, -1]', "grid point inference.laplace.adam_steps=-1 .*must be > 0"),
])
def test_bad_grids_are_one_line_errors(tmp_path, grid, match):
    text = Path(TINY).read_text().replace('seed = "0..3"', grid).replace('name = "tiny_grid"', 'name = "g"')
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ZooError, match=match):
        expand(str(path))


def test_seed_flag_conflicts_with_a_seed_axis():
    with pytest.raises(ZooError, match="--seed 3 conflicts with the grid's seed axis"):
        expand(TINY, seed=3)


def test_every_executor_gives_identical_results(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'zoo[ray]' (CI installs it)")
    outs = {}
    for name in ("serial", "local", "ray"):
        out = tmp_path / name
        assert run.main([TINY, "--executor", name, "--workers", "2", "--quiet", "--out", str(out)]) == 0
        outs[name] = (out / "tiny_grid" / "summary.csv").read_bytes()
        assert _stored(out, "tiny_grid") == 8
    assert outs["serial"] == outs["local"] == outs["ray"]


def test_rerun_skips_stored_cells_unless_told(tmp_path, capsys):
    args = [TINY, "--executor", "serial", "--quiet", "--out", str(tmp_path),
            "--set", "inference.methods=['laplace']"]
    assert run.main(args) == 0
    assert _ran(capsys.readouterr().err) == 4
    assert run.main(args) == 0
    assert _ran(capsys.readouterr().err) == 0
    assert run.main(args + ["--rerun"]) == 0
    assert _ran(capsys.readouterr().err) == 4


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_with_only_the_missing_cells(tmp_path, sig):
    cmd = [sys.executable, "-m", "zoo.run", SLOW, "--executor", "serial", "--quiet",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _stored(tmp_path, "slow_grid") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    done = _stored(tmp_path, "slow_grid")
    assert 2 <= done < 6, "the run finished before it could be interrupted"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "slow_grid").exists()  # no report from a partial run
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _ran(again.stderr) == 6 - done
    assert (tmp_path / "slow_grid" / "report.md").is_file()
    assert not list((tmp_path / ".cells" / "slow_grid").glob(".*"))  # no temp folder left


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc to find workers")
def test_sigterm_stops_the_pool_workers(tmp_path):
    # `kill PID` stops a run as Ctrl-C does (the same KeyboardInterrupt path, so it resumes as
    # the SIGINT case above). Without the handler the parent dies alone and its spawned workers
    # fit on, orphaned.
    cmd = [sys.executable, "-m", "zoo.run", SLOW, "--executor", "local", "--workers", "2",
           "--quiet", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _stored(tmp_path, "slow_grid") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "no worker processes found"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in err
    deadline = time.time() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
    assert not (tmp_path / "slow_grid").exists()


def test_a_failing_cell_does_not_lose_the_others(tmp_path, capsys):
    # lr = 1e6 makes the ELBO NaN at once: that cell fails, the other three are stored.
    args = [TINY, "--executor", "serial", "--quiet", "--out", str(tmp_path),
            "--set", "inference.methods=['svi']", "--set", "inference.svi.num_steps=50",
            "--set", "inference.svi.num_samples=20"]
    text = Path(TINY).read_text() + '\n"inference.svi.lr" = [0.01, 1e6]\n'
    recipe = tmp_path / "tiny_grid.toml"
    recipe.write_text(text.replace('seed = "0..3"', 'seed = "0..1"'))
    args[0] = str(recipe)
    assert run.main(args) == 1
    err = capsys.readouterr().err
    assert "2 failed" in err and "traceback:" in err and "no report was written" in err
    assert _stored(tmp_path, "tiny_grid") == 2
    errors = list((tmp_path / ".cells" / "tiny_grid").glob("*/error.txt"))
    assert len(errors) == 2 and "Traceback" in errors[0].read_text()
    assert not (tmp_path / "tiny_grid").exists()
    # --fail-fast stops at the first failure: the serial order puts a good cell first
    assert run.main(args + ["--fail-fast", "--rerun"]) == 1
    assert "--fail-fast" in capsys.readouterr().err


def test_executor_and_device_errors(tmp_path, capsys):
    assert run.main([TINY, "--executor", "seral", "--out", str(tmp_path)]) == 2
    assert "did you mean 'serial'" in capsys.readouterr().err
    assert run.main([TINY, "--executor", "serial", "--address", "auto", "--out", str(tmp_path)]) == 2
    assert "--address" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert run.main([TINY, "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "cuda" in capsys.readouterr().err.lower()
    assert not (tmp_path / "tiny_grid").exists()
