"""The executor layer: task order, captured failures, fail_fast, threads, dead workers, Ctrl-C.

The task functions are module-level here: spawned pool workers import this module by name
(pytest puts tests/ on sys.path and spawn hands the parent's sys.path to its children).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import torch

from zoo.errors import ZooError
from zoo.executors import RAY_MISSING, ExecutorOptions, TaskFailed, run_tasks

LOCAL = ExecutorOptions("local", workers=2)


def _square(x: int) -> int:
    return x * x


def _threads(_: object) -> int:
    return torch.get_num_threads()


class _TwoArgError(Exception):
    """Cannot be rebuilt from its pickle: __init__ wants two arguments, args holds one."""

    def __init__(self, a: str, b: str):
        super().__init__(f"{a} {b}")


def _cell(task: tuple[str, int, str, float]) -> tuple[int, int]:
    """Log one execution in folder/<i>.log, then do `action`; return (i, torch threads)."""
    folder, i, action, seconds = task
    log = Path(folder, f"{i}.log")
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    if action == "fail":
        raise ValueError(f"bad task {i}")
    if action == "odd":
        raise _TwoArgError("odd", "error")
    if action == "die" or (action == "die_once" and len(log.read_text().splitlines()) == 1):
        os._exit(3)  # a worker killed outright: no exception, no result
    time.sleep(seconds)
    return i, torch.get_num_threads()


def _runs(folder: Path, i: int) -> int:
    log = folder / f"{i}.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_serial_results_in_task_order():
    seen = []
    results = run_tasks(_square, range(10), ExecutorOptions("serial"), progress=lambda t, r: seen.append((t, r)))
    assert results == [x * x for x in range(10)]
    assert seen == [(x, x * x) for x in range(10)]


def test_empty_task_list():
    assert run_tasks(_square, [], LOCAL) == []


def test_serial_failure_keeps_the_others(tmp_path):
    tasks = [(str(tmp_path), i, "fail" if i == 1 else "ok", 0.0) for i in range(3)]
    results = run_tasks(_cell, tasks, ExecutorOptions("serial"))
    assert results[0][0] == 0 and results[2][0] == 2
    assert isinstance(results[1], ValueError) and "ValueError: bad task 1" in results[1].zoo_traceback


def test_local(tmp_path, monkeypatch):
    # one pool for: task order, captured failures, progress, the default threads per worker
    monkeypatch.setattr(os, "cpu_count", lambda: 6)  # the parent sizes the pool: 2 workers x 3 threads
    actions = {3: "fail", 4: "odd"}
    tasks = [(str(tmp_path), i, actions.get(i, "ok"), 0.0) for i in range(8)]
    seen = []
    results = run_tasks(_cell, tasks, ExecutorOptions("local", workers=2),
                        progress=lambda t, r: seen.append((t[1], isinstance(r, Exception))))
    assert [r for i, r in enumerate(results) if i not in actions] == [(i, 3) for i in (0, 1, 2, 5, 6, 7)]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad task 3"
    assert "in _cell" in results[3].zoo_traceback and "ValueError: bad task 3" in results[3].zoo_traceback
    # an exception that cannot be rebuilt from its pickle comes back as a RuntimeError stand-in
    assert isinstance(results[4], RuntimeError) and str(results[4]) == "_TwoArgError: odd error"
    assert "_TwoArgError" in results[4].zoo_traceback
    assert sorted(seen) == [(i, i in actions) for i in range(8)]
    assert all(_runs(tmp_path, i) == 1 for i in range(8))


def test_local_fresh_worker_after_max_tasks_per_child(tmp_path):
    # One worker, two tasks per process: tasks 0-1 share a process, 2-3 share a new one.
    tasks = [(str(tmp_path), i, "ok", 0.0) for i in range(4)]
    run_tasks(_cell, tasks, ExecutorOptions("local", workers=1, max_tasks_per_child=2))
    pids = [(tmp_path / f"{i}.log").read_text().strip() for i in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


def test_fail_fast_serial(tmp_path):
    tasks = [(str(tmp_path), i, "fail" if i == 2 else "ok", 0.0) for i in range(8)]
    with pytest.raises(TaskFailed) as info:
        run_tasks(_cell, tasks, ExecutorOptions("serial", fail_fast=True))
    assert info.value.task_index == 2 and isinstance(info.value.exception, ValueError)
    assert "bad task 2" in info.value.traceback and str(info.value) == "task 2 failed: ValueError: bad task 2"
    assert [_runs(tmp_path, i) for i in range(8)] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert pickle.loads(pickle.dumps(info.value)).task_index == 2


def test_fail_fast_local(tmp_path):
    tasks = [(str(tmp_path), i, "fail" if i == 0 else "ok", 0.3) for i in range(12)]
    with pytest.raises(TaskFailed) as info:
        run_tasks(_cell, tasks, ExecutorOptions("local", workers=2, fail_fast=True))
    assert info.value.task_index == 0 and "bad task 0" in info.value.traceback
    ran = sum(_runs(tmp_path, i) for i in range(12))
    assert 1 <= ran <= 4, ran  # the failure and what was already running, not all 12


def test_serial_threads_restored():
    before = torch.get_num_threads()
    assert run_tasks(_threads, [0], ExecutorOptions("serial", threads=before + 1)) == [before + 1]
    assert torch.get_num_threads() == before


def test_dead_worker_fails_only_its_task(tmp_path):
    # one worker, so the task in flight when it dies is the one that killed it
    tasks = [(str(tmp_path), i, "die" if i == 2 else "ok", 0.0) for i in range(5)]
    results = run_tasks(_cell, tasks, ExecutorOptions("local", workers=1, threads=2))
    assert isinstance(results[2], BrokenProcessPool) and "worker process died" in results[2].zoo_traceback
    assert [r for i, r in enumerate(results) if i != 2] == [(i, 2) for i in (0, 1, 3, 4)]  # on a fresh pool
    assert [_runs(tmp_path, i) for i in range(5)] == [1] * 5

    tasks = [(str(tmp_path), 9, "die", 0.0), (str(tmp_path), 10, "ok", 0.0)]
    with pytest.raises(TaskFailed) as info:
        run_tasks(_cell, tasks, ExecutorOptions("local", workers=1, fail_fast=True))
    assert info.value.task_index == 0 and isinstance(info.value.exception, BrokenProcessPool)
    assert _runs(tmp_path, 10) == 0


def test_ctrl_c_stops_the_workers_now(tmp_path):
    tasks = [(str(tmp_path), i, "ok", 120.0) for i in range(2)]

    def interrupt():  # once both long tasks are running, as a Ctrl-C would
        while sum(_runs(tmp_path, i) for i in range(2)) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_tasks(_cell, tasks, LOCAL)
    assert time.monotonic() - start < 30
    for i in range(2):
        pid = int((tmp_path / f"{i}.log").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("options, message", [
    (ExecutorOptions("locl"), "unknown executor 'locl' (did you mean 'local'?)"),
    (ExecutorOptions(workers=-1), "--workers must be >= 0"),
    (ExecutorOptions(threads=-2), "--threads must be >= 0"),
    (ExecutorOptions("local", address="auto"), "--address is for --executor ray"),
    (ExecutorOptions("ray", cpus_per_task=0), "cpus_per_task must be > 0"),
    (ExecutorOptions("ray", retries=-1), "retries must be >= 0"),
    (ExecutorOptions(max_tasks_per_child=0), "max_tasks_per_child must be >= 1"),
])
def test_bad_options(options, message):
    with pytest.raises(ZooError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        run_tasks(_square, [1], options)


def test_ray_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ZooError) as info:
        run_tasks(_square, [1], ExecutorOptions("ray"))
    assert str(info.value) == RAY_MISSING


def test_ray(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'zoo[ray]'")
    # Ray workers import _cell by module name: make tests/ importable there, as zoo is
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                    os.environ.get("PYTHONPATH")])))
    actions = {3: "fail", 4: "die_once"}
    tasks = [(str(tmp_path), i, actions.get(i, "ok"), 0.0) for i in range(6)]
    seen = []
    results = run_tasks(_cell, tasks, ExecutorOptions("ray", workers=2, threads=2, retries=1),
                        progress=lambda t, r: seen.append(t[1]))
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert [r for i, r in enumerate(results) if i != 3] == [(i, 2) for i in range(6) if i != 3]
    assert isinstance(results[3], ValueError) and "bad task 3" in results[3].zoo_traceback
    assert _runs(tmp_path, 3) == 1  # an exception is the cell's failure: never retried
    assert _runs(tmp_path, 4) == 2  # a dead worker is retried
    assert sorted(seen) == list(range(6))
