"""``python -m zoo.run``: listing, exit status 2 with one line for bad input, a smoke run that
writes every output, byte-identical summaries for the same seed, and atomic result folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo import registry, report, run
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parent.parent
BAD_DIR = Path(__file__).resolve().parent / "bad_recipes"

# A recipe small enough for a test: one parameter, all three methods, smoke settings only.
TINY = """\
# python -m zoo.run tiny.toml
[recipe]
name = "tiny"
description = "normal mean with known noise, every method, tiny settings"
seed = 3

[data]
dataset = "normal_synthetic"
args = { n = 20 }

[[models]]
name = "normal_normal"
args = { prior_scale = 5.0 }

[inference]
methods = ["nuts", "svi", "laplace"]
num_samples = 1000

[smoke]
num_samples = 60

[smoke.nuts]
num_warmup = 40
num_chains = 2

[smoke.svi]
num_steps = 150
window = 50

[smoke.laplace]
adam_steps = 50
lbfgs_steps = 10
"""


def _env() -> dict:
    # The subprocess may run from any folder; it must still import this checkout's zoo.
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.run", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "recipes" / "tiny.toml"
    path.parent.mkdir()
    path.write_text(TINY)
    return path


def _leftovers(folder: Path) -> list[str]:
    """What a run left in ``folder``, besides the cell store .cells (kept on purpose: finished
    cells are what a re-run resumes from)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".cells") if folder.exists() else []


def test_list_names_every_model_and_recipe():
    out = cli("--list")
    assert out.returncode == 0, out.stderr
    for name in registry.list_models():
        assert name in out.stdout
    for name in ("eight_schools", "linear_regression", "polynomial_degree", "eight_schools_posteriordb"):
        assert name in out.stdout
    assert "hierarchical" in out.stdout and "nuts,svi,laplace" in out.stdout


def test_check_prints_runs_and_settings():
    out = cli("eight_schools", "--check", "--set", "inference.chees.num_chains=32")
    assert out.returncode == 0, out.stderr
    assert "eight_schools_centered: chees" in out.stdout and "num_chains=32" in out.stdout


@pytest.mark.parametrize("path", sorted(BAD_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_bad_recipe_exits_2_with_one_line(path, tmp_path, capsys):
    # In-process for speed (each subprocess costs ~2 s of imports); test_bad_input_in_subprocess
    # checks the same path through a real interpreter.
    out = tmp_path / "results"
    assert run.main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and path.name in err, err
    assert not out.exists()  # nothing written, not even the results folder


def test_bad_input_in_subprocess(tmp_path):
    out = tmp_path / "results"
    commands = [[BAD_DIR / "unknown_model.toml"], ["eight_schools", "--set", "inference.nmu_samples=3"]]
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.run", *map(str, c), "--out", str(out)], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]  # started together: each is mostly interpreter start-up
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, stderr
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        assert "did you mean" in stderr
    assert not out.exists()


def test_bad_data_via_api():
    # Registered loaders cannot produce NaN or drop keys, so bad data is tested through zoo.fit.
    with pytest.raises(ZooError, match="missing 'y'"):
        zoo.fit("normal_normal", {"N": 5}, method="laplace")
    with pytest.raises(ZooError, match="NaN"):
        zoo.fit("normal_normal", {"y": [1.0, float("nan")]}, method="laplace")


def test_smoke_run_writes_everything_and_is_reproducible(tiny, tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    proc = cli(tiny, "--smoke", "--quiet", "--out", out1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = out1 / "tiny-smoke"
    assert _leftovers(out1) == ["tiny-smoke"]  # no temp folders left beside it
    names = _leftovers(folder)
    assert {"report.md", "summary.csv", "figures"} <= set(names)
    assert {f"normal_normal__{m}.nc" for m in ("nuts", "svi", "laplace")} <= set(names)
    pngs = _leftovers(folder / "figures")
    assert "normal_normal__nuts__rank.png" in pngs and "normal_normal__vs_exact.png" in pngs
    assert "normal_normal__svi__elbo.png" in pngs and any(p.endswith("__ppc.png") for p in pngs)

    text = (folder / "report.md").read_text()
    for part in ["python -m zoo.run", "seed: 3", "torch ", "pyro ", "arviz ", "## Warnings",
                 "num_warmup=40", "exact_mean", "![", "figures/normal_normal__vs_exact.png", "Smoke run"]:
        assert part in text, part
    for line in text.splitlines():  # every linked figure exists
        if line.startswith("!["):
            assert (folder / line[line.index("(") + 1 : -1]).is_file(), line

    summary = (folder / "summary.csv").read_text()
    assert summary.splitlines()[0].startswith("model,method,param,mean,sd,hdi_3%,hdi_97%")
    assert summary.count("normal_normal,") == 3  # mu for each method

    # Same recipe and seed, run again (in-process this time): byte-identical summary.csv.
    assert run.main([str(tiny), "--smoke", "--quiet", "--out", str(out2)]) == 0
    assert (out2 / "tiny-smoke" / "summary.csv").read_bytes() == (folder / "summary.csv").read_bytes()


def test_rerun_replaces_result_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(tiny), "--smoke", "--quiet", "--set", "inference.methods=['laplace']"]
    assert run.main(args) == 0
    folder = tmp_path / "results" / "tiny-smoke"
    (folder / "stale.txt").write_text("from an earlier run")
    assert run.main(args) == 0
    assert not (folder / "stale.txt").exists()
    assert _leftovers(tmp_path / "results") == ["tiny-smoke"]


@pytest.mark.parametrize("where", ["fit", "report", "interrupt"])
def test_failed_run_leaves_nothing(tiny, tmp_path, monkeypatch, where):
    def args(out: Path) -> list[str]:  # serial: the monkeypatches below live in this process
        return [str(tiny), "--smoke", "--quiet", "--out", str(out), "--set",
                "inference.methods=['laplace']", "--executor", "serial", "--rerun"]

    out = tmp_path / "results"
    assert run.main(args(out)) == 0
    before = {p.name: p.read_bytes() for p in (out / "tiny-smoke").iterdir() if p.is_file()}

    def boom(*a, **k):
        raise KeyboardInterrupt if where == "interrupt" else RuntimeError("injected failure")

    if where == "fit":
        monkeypatch.setattr(zoo.inference, "fit", boom)
    else:  # fails half-way through writing the folder: after summary.csv and the .nc files
        monkeypatch.setattr(report, "write_figures", boom)
    def fails(out: Path) -> None:
        # a failed cell exits 1 and an interrupt 130 (both say how to resume); a failure
        # while writing the report propagates with its traceback
        if where == "report":
            with pytest.raises(RuntimeError):
                run.main(args(out))
        else:
            assert run.main(args(out)) == (130 if where == "interrupt" else 1)

    fails(out)
    # the earlier result is untouched and no temp folder is left beside it
    assert _leftovers(out) == ["tiny-smoke"]
    assert {p.name: p.read_bytes() for p in (out / "tiny-smoke").iterdir() if p.is_file()} == before

    fresh = tmp_path / "fresh"
    fails(fresh)
    assert _leftovers(fresh) == []


def test_a_killed_writers_temp_folder_is_removed_by_the_next_write(tmp_path):
    # SIGKILL runs no cleanup: the writer's temp folder stays until dest is written again.
    dest = tmp_path / "cell"
    code = ("import os, signal, sys; from pathlib import Path; from zoo.report import atomic_directory\n"
            "with atomic_directory(Path(sys.argv[1])) as tmp:\n"
            "    (tmp / 'half.txt').write_text('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(dest)], env=_env(), capture_output=True)
    assert proc.returncode == -9, proc.stderr
    orphan, = tmp_path.glob(".cell.tmp-*")
    live = tmp_path / f".cell.tmp-{report._HOST}-{os.getpid()}-abc"  # a writer still running
    elsewhere = tmp_path / ".cell.tmp-otherhost-1-abc"  # another host's pid: unknowable here
    other = tmp_path / f".cellar.tmp-{report._HOST}-999999999-abc"  # another dest's
    for p in (live, elsewhere, other):
        p.mkdir()
    with report.atomic_directory(dest) as tmp:
        (tmp / "whole.txt").write_text("whole")
    assert not orphan.exists() and live.exists() and elsewhere.exists() and other.exists()
    assert [p.name for p in dest.iterdir()] == ["whole.txt"]


def test_other_exception_exits_1_with_traceback(tiny, tmp_path):
    code = ("import sys, zoo.inference; from zoo import run\n"
            "def boom(*a, **k): raise RuntimeError('injected failure')\n"
            "zoo.inference.fit = boom\n"
            f"sys.exit(run.main([{str(tiny)!r}, '--smoke', '--executor', 'serial', '--out', "
            f"{str(tmp_path / 'out')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "RuntimeError: injected failure" in proc.stderr and "error.txt" in proc.stderr
    tracebacks = list((tmp_path / "out" / ".cells").rglob("error.txt"))
    assert tracebacks and "Traceback" in tracebacks[0].read_text()
    assert _leftovers(tmp_path / "out") == []  # no report


def test_laplace_not_positive_definite_is_reported_not_fatal(tiny, tmp_path, monkeypatch, capsys):
    from zoo.errors import NotPositiveDefiniteError

    real_fit = zoo.inference.fit

    def fit(model, data, method="mcmc", **kw):
        if method == "laplace":
            raise NotPositiveDefiniteError("Hessian at the mode has a negative eigenvalue")
        return real_fit(model, data, method=method, **kw)

    monkeypatch.setattr(zoo.inference, "fit", fit)
    out = tmp_path / "results"
    args = [str(tiny), "--smoke", "--quiet", "--out", str(out), "--executor", "serial",
            "--set", "inference.methods=['nuts', 'laplace']"]
    assert run.main(args) == 0
    assert "laplace: failed: Hessian at the mode" in capsys.readouterr().err
    text = (out / "tiny-smoke" / "report.md").read_text()
    assert "| normal_normal | laplace | **FAILED** |" in text
    assert "normal_normal / laplace: failed: Hessian" in text.split("## Overview")[0]  # in Warnings
    assert not (out / "tiny-smoke" / "normal_normal__laplace.nc").exists()
