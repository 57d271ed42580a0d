"""Run many independent tasks (recipe cells) with one of three executors, chosen by name.

    serial  an in-process loop: tracebacks and debuggers work as usual
    local   a pool of spawned worker processes on this machine (the default)
    ray     Ray tasks on a local Ray or on a cluster (``pip install 'zoo[ray]'``)

``run_tasks(fn, tasks, options)`` returns one slot per task, in task order: ``fn(task)``'s
result, or the exception it raised (with its formatted traceback as ``exc.zoo_traceback``), so
one failing cell never loses the others. ``fn`` must be a module-level function: workers import
it by name.

What can go wrong besides a task's own exception:

- Ctrl-C: pool workers ignore SIGINT, and the parent terminates them (running fits included:
  cells write their results atomically, so a killed cell leaves nothing half-written), cancels
  Ray tasks, and re-raises KeyboardInterrupt.
- A local worker dies (OOM killer, segfault): the pool fails the tasks in flight, which are
  reported as ``BrokenProcessPool`` in their slots, and the rest run on a fresh pool.
- A Ray worker or node dies: Ray re-runs the task up to ``retries`` times. A task's exception is
  never retried: it is the cell's own failure, and would fail the same way again.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from .errors import ZooError, unknown

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[Any, Any], None]  # (task, result or exception)

EXECUTORS = ("local", "serial", "ray")
RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'zoo[ray]' (or pip install ray)"


@dataclass(frozen=True)
class ExecutorOptions:
    name: str = "local"
    workers: int = 0  # 0: os.cpu_count()
    threads: int = 0  # torch threads per worker; 0: max(1, cpu_count // workers)
    address: str | None = None  # ray only: None (a new local Ray), "auto", "ray://host:port"
    cpus_per_task: float = 1.0  # ray only
    retries: int = 3  # ray only: re-runs of a task whose worker died (never of an exception)
    fail_fast: bool = False
    # local only: a fresh worker process after this many tasks (None: never), so that memory a
    # task leaves behind (torch.jit's compiled graphs, Pyro's caches) is given back
    max_tasks_per_child: int | None = None


class TaskFailed(Exception):
    """With ``fail_fast``: the first task that failed, its exception and the traceback text."""

    def __init__(self, task_index: int, exception: BaseException):
        super().__init__(task_index, exception)  # the args pickle, so this can cross processes
        self.task_index = task_index
        self.exception = exception
        self.traceback: str = getattr(exception, "zoo_traceback", "")

    def __str__(self) -> str:
        return f"task {self.task_index} failed: {type(self.exception).__name__}: {self.exception}"


def validate(options: ExecutorOptions) -> None:
    """Raise ``ZooError`` for options no executor can honour (the CLI's flags map onto them)."""
    if options.name not in EXECUTORS:
        raise unknown("executor", options.name, EXECUTORS)
    if options.workers < 0:
        raise ZooError(f"--workers must be >= 0 (0: one per CPU), got {options.workers}")
    if options.threads < 0:
        raise ZooError(f"--threads must be >= 0 (0: CPUs / workers), got {options.threads}")
    if options.address is not None and options.name != "ray":
        raise ZooError(f"--address is for --executor ray (the executor is {options.name!r})")
    if options.cpus_per_task <= 0:
        raise ZooError(f"cpus_per_task must be > 0, got {options.cpus_per_task}")
    if options.retries < 0:
        raise ZooError(f"retries must be >= 0, got {options.retries}")
    if options.max_tasks_per_child is not None and options.max_tasks_per_child < 1:
        raise ZooError(f"max_tasks_per_child must be >= 1 or None, got {options.max_tasks_per_child}")


def run_tasks(fn: Callable[[T], R], tasks: Sequence[T], options: ExecutorOptions,
              progress: Callable[[T, R | BaseException], None] | None = None) -> list[R | BaseException]:
    """Run fn on every task with the chosen executor; return results in task order.

    An exception raised by ``fn`` is returned in its task's slot (with ``zoo_traceback``) and the
    other tasks go on; with ``options.fail_fast`` the first failure stops tasks not yet started
    and raises ``TaskFailed``. ``progress(task, outcome)`` is called in this process as each task
    finishes. KeyboardInterrupt stops the workers and is re-raised.
    """
    validate(options)
    if not tasks:
        return []
    run = {"serial": _run_serial, "local": _run_local, "ray": _run_ray}[options.name]
    return run(fn, list(tasks), options, progress)


# --- shared ------------------------------------------------------------------------------------

def _attach(exc: BaseException, text: str | None = None) -> BaseException:
    """Give exc its traceback text: the traceback object itself does not survive pickling."""
    text = text or "".join(traceback.format_exception(exc))
    try:
        exc.zoo_traceback = text  # type: ignore[attr-defined]
    except AttributeError:  # an exception class with __slots__
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        exc.zoo_traceback = text  # type: ignore[attr-defined]
    return exc


def _invoke(fn: Callable[[T], R], task: T, check_pickle: bool = True) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)``: a returned failure keeps the executor's own
    error channel for infrastructure failures (a dead worker), so the two are never confused.
    Only ``Exception`` is caught: KeyboardInterrupt (and Ray's cancel) must propagate."""
    try:
        return True, fn(task)
    except Exception as e:
        exc = _attach(e, traceback.format_exc())
        if check_pickle:
            try:  # one that cannot be rebuilt in the parent would break the whole pool
                pickle.loads(pickle.dumps(exc))
            except Exception:
                exc = _attach(RuntimeError(f"{type(e).__name__}: {e}"), exc.zoo_traceback)  # type: ignore[attr-defined]
        return False, exc


def _set_threads(threads: int) -> None:
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _finish(i: int, out: Any, tasks: list, results: list, progress: Progress | None,
            options: ExecutorOptions) -> TaskFailed | None:
    results[i] = out
    if progress is not None:
        progress(tasks[i], out)
    if options.fail_fast and isinstance(out, BaseException):
        return TaskFailed(i, out)
    return None


# --- serial ------------------------------------------------------------------------------------

def _run_serial(fn: Callable, tasks: list, options: ExecutorOptions,
                progress: Progress | None) -> list[Any]:
    import torch

    results: list[Any] = [None] * len(tasks)
    before = torch.get_num_threads()
    _set_threads(options.threads)  # only when asked: by default the caller's setting stands
    try:
        for i, task in enumerate(tasks):
            _, out = _invoke(fn, task, check_pickle=False)
            if failed := _finish(i, out, tasks, results, progress, options):
                raise failed from out
    finally:
        torch.set_num_threads(before)
    return results


# --- local: a process pool ---------------------------------------------------------------------

def _sizes(options: ExecutorOptions) -> tuple[int, int]:
    cpus = os.cpu_count() or 1
    workers = options.workers or cpus
    return workers, options.threads or max(1, cpus // workers)


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group: the parent alone decides what stops, and a worker
    # interrupted mid-task would otherwise report a spurious failure or die printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_threads(threads)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop now: shutdown() alone waits for running tasks, which may be hour-long fits."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown drops it
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()


def _outcome(fut: Future) -> Any:
    exc = fut.exception()
    if exc is None:
        return fut.result()[1]
    if isinstance(exc, BrokenProcessPool):
        lost = BrokenProcessPool("a worker process died (killed, out of memory or crashed) while "
                                 "this task was running or queued beside it")
        lost.__cause__ = exc
        return _attach(lost)
    return _attach(exc)  # e.g. a result that could not be pickled


def _run_local(fn: Callable, tasks: list, options: ExecutorOptions,
               progress: Progress | None) -> list[Any]:
    pickle.dumps(fn)  # a lambda or closure fails here, clearly, not once per task in a worker
    workers, threads = _sizes(options)
    procs = min(workers, len(tasks))
    ctx = mp.get_context("spawn")  # not fork: forking a process that holds torch threads can deadlock

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(procs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(threads,),
                                   max_tasks_per_child=options.max_tasks_per_child)

    # At most `procs` tasks are submitted at a time, so every submitted task is running: when a
    # worker dies, the pool fails exactly the tasks in flight and the rest go to a fresh pool, and
    # fail_fast has nothing queued to cancel.
    results: list[Any] = [None] * len(tasks)
    todo = deque(range(len(tasks)))
    running: dict[Future, tuple[int, ProcessPoolExecutor]] = {}
    pool: ProcessPoolExecutor | None = None
    failed: TaskFailed | None = None
    try:
        while running or (todo and failed is None):
            while todo and failed is None and len(running) < procs:
                pool = pool or new_pool()
                i = todo.popleft()
                running[pool.submit(_invoke, fn, tasks[i])] = i, pool
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                i, owner = running.pop(fut)
                if isinstance(fut.exception(), BrokenProcessPool) and owner is pool:
                    pool.shutdown(wait=False)  # its workers are gone; the next submit makes a new one
                    pool = None
                out = _outcome(fut)
                failed = failed or _finish(i, out, tasks, results, progress, options)
    except BaseException:
        if pool is not None:
            _terminate(pool)
        raise
    if pool is not None:
        pool.shutdown(wait=True)
    if failed is not None:
        raise failed from failed.exception
    return results


# --- ray ---------------------------------------------------------------------------------------

def _ray_call(fn: Callable, task: Any, threads: int) -> tuple[bool, Any]:
    # Ray reuses worker processes across tasks, so the thread count is set per task.
    _set_threads(threads)
    return _invoke(fn, task, check_pickle=False)


def _run_ray(fn: Callable, tasks: list, options: ExecutorOptions,
             progress: Progress | None) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise ZooError(RAY_MISSING) from None

    started = not ray.is_initialized()  # a caller's own ray.init() is left as it was
    if started:
        if options.address is None:
            # "local", not None: None would join a RAY_ADDRESS or `ray start` cluster, where
            # num_cpus is an error; joining one is what --address auto is for.
            kwargs: dict[str, Any] = {"address": "local"}
            if options.workers:
                kwargs["num_cpus"] = options.workers
        else:
            kwargs = {"address": options.address}
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError) as e:  # no cluster there; ray:// without ray[client]
            raise ZooError(f"cannot connect to Ray at --address {options.address!r}: {e}") from e
    # Each task reserves cpus_per_task CPUs of whichever node runs it: use that many threads.
    threads = options.threads or max(1, int(options.cpus_per_task))
    # Application exceptions come back as values from _invoke, so max_retries only ever re-runs
    # tasks lost to system failures (a worker or node that died).
    remote = ray.remote(num_cpus=options.cpus_per_task, max_retries=options.retries)(_ray_call)
    results: list[Any] = [None] * len(tasks)
    index: dict[Any, int] = {}
    pending: list = []
    try:
        for i, task in enumerate(tasks):
            pending.append(ref := remote.remote(fn, task, threads))
            index[ref] = i
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    out = ray.get(ref)[1]
                except Exception as e:  # the task's worker died more than `retries` times
                    out = _attach(e)
                if failed := _finish(index[ref], out, tasks, results, progress, options):
                    raise failed from out
    except BaseException:  # fail_fast, Ctrl-C: queued tasks never run, running ones are killed
        for r in pending:
            ray.cancel(r, force=True)  # force: do not wait for a long fit to notice an interrupt
        raise
    finally:
        if started:
            ray.shutdown()  # stops a Ray we started; only disconnects from a cluster we joined
    return results
