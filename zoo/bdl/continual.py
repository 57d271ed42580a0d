"""Variational continual learning (VCL; Nguyen, Li, Bui & Turner 2018) for ``bnn_mlp``.

Tasks arrive one at a time and old data are not kept. VCL keeps the belief instead: the
mean-field posterior after task t−1 is the prior for task t,

    q_t = argmin_q  KL(q ‖ q_{t−1}) − E_q[log p(D_t | w)],      q_0 = p = N(0, s²),

the Bayes-by-backprop objective (``zoo.bdl.bbb``) with a prior that has a mean and a scale per
weight. Between Gaussians the KL is closed-form, weight by weight,

    KL(N(μ, σ²) ‖ N(m, s²)) = log(s/σ) + (σ² + (μ − m)²) / (2 s²) − ½,

and q_t starts from q_{t−1}. The baselines train on task t from the previous weights too:

- ``finetune``: Bayes by backprop with the original prior N(0, s²) (the belief is discarded);
- ``map_finetune``: a plain network, cross-entropy plus the prior's weight decay |w|²/(2 s²);
- ``joint``: Bayes by backprop on every task so far from scratch (it keeps the old data, so it
  is the reference VCL tries to approach, not a continual method).

This is VCL without its coreset. ``fit_bbb`` takes an isotropic zero-mean prior and standardises
its inputs, so the loss is assembled here from bbb's pieces (``MeanField`` for the layout and
initialisation, ``draw_noise``/``network_samples`` for local reparameterisation,
``expected_log_likelihood``) and trained by ``zoo.bdl.net.train``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

from ..errors import unknown
from ..uncertainty import ClassificationPredictive
from .bbb import MeanField, draw_noise, expected_log_likelihood, network_samples
from .net import mlp, train

NGUYEN = ("Nguyen, Li, Bui & Turner (2018), Variational continual learning, ICLR")
METHODS = ("vcl", "finetune", "map_finetune", "joint")
DTYPE = torch.float64


class GaussianPrior(NamedTuple):
    """A mean-field Gaussian over the packed weights (``MeanField``'s layout)."""

    loc: Tensor
    scale: Tensor


def isotropic_prior(q: MeanField) -> GaussianPrior:
    """bnn_mlp's prior N(0, s²) in q's layout (s per layer, as ``MeanField.prior_sd``)."""
    return GaussianPrior(torch.zeros_like(q.prior_sd), q.prior_sd.clone())


def posterior_as_prior(q: MeanField) -> GaussianPrior:
    """VCL's step: the fitted q(w) = N(μ, softplus(ρ)²), frozen, as the next task's prior."""
    return GaussianPrior(q.loc.detach().clone(), q.scale().detach().clone())


def kl_gaussian(loc: Tensor, scale: Tensor, prior: GaussianPrior) -> Tensor:
    """KL(N(μ, σ²) ‖ N(m, s²)) summed over the weights:
    Σ log(s/σ) + (σ² + (μ − m)²) / (2 s²) − ½."""
    s2 = prior.scale.square()
    return (torch.log(prior.scale / scale) + (scale.square() + (loc - prior.loc).square()) / (2 * s2)
            - 0.5).sum()


def negative_elbo(q: MeanField, prior: GaussianPrior, x: Tensor, y: Tensor, num_data: int,
                  noise: tuple[Tensor, ...]) -> Tensor:
    """KL(q ‖ prior) − (N / |B|) Σ_{i∈B} E_q log p(y_i | x_i, w) for a classification minibatch
    (x, y) of N rows, the expectation from the standard normals ``noise`` (``draw_noise``)."""
    sigma = q.scale()
    f = network_samples(q, x, noise, sigma)
    scaled = (num_data / x.shape[0]) * expected_log_likelihood(q, f, y, "classification")
    return kl_gaussian(q.loc, sigma, prior) - scaled


def new_posterior(in_dim: int, hidden: int, num_classes: int, prior_scale: float,
                  seed: int) -> MeanField:
    """A fresh q, initialised as ``bnn_mlp_guide`` (and ``fit_bbb``) do."""
    gen = torch.Generator().manual_seed(seed)
    return MeanField(in_dim, hidden, num_classes, prior_scale, dtype=DTYPE, generator=gen)


def fit_task(q: MeanField, prior: GaussianPrior, x: Tensor, y: Tensor, epochs: int,
             batch_size: int, lr: float, num_particles: int, seed: int) -> list[float]:
    """Train q in place on one task's data (Adam on minibatches, local reparameterisation);
    returns the mean loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    q.theta.requires_grad_(True)

    def loss(idx: Tensor) -> Tensor:
        noise = draw_noise(q, len(idx), num_particles, True, gen)
        return negative_elbo(q, prior, x[idx], y[idx], x.shape[0], noise)

    history = train(q.trainable, loss, x.shape[0], epochs, batch_size, lr, seed=seed)
    q.theta.requires_grad_(False)
    return history


def predict(q: MeanField, x: Tensor, num_samples: int, seed: int) -> ClassificationPredictive:
    """The predictive from ``num_samples`` whole-network draws from q."""
    from ..models.networks import predictive_from_draws

    draws = q.sample_weights(num_samples, torch.Generator().manual_seed(seed))
    return predictive_from_draws(x, draws, "classification")  # type: ignore[return-value]


# -- the split task -------------------------------------------------------------------------
def split_tasks(num_tasks: int, n_train: int, n_test: int, seed: int,
                radius: float = 3.0, spread: float = 0.7) -> list[dict[str, Tensor]]:
    """Task t = 0..T−1: x ~ N(c_t, spread² I) around c_t = radius (cos 2πt/T, sin 2πt/T),
    y = 1[(x − c_t) · u_t > 0] with u_t = (cos φ_t, sin φ_t), φ_t = 0.9 π t: each task a
    linear boundary through its own cluster, rotated from task to task. One network can
    solve all tasks at once (the clusters barely overlap), so forgetting is the method's."""
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(num_tasks):
        theta, phi = 2 * math.pi * t / num_tasks, 0.9 * math.pi * t
        centre = torch.tensor([math.cos(theta), math.sin(theta)], dtype=DTYPE) * radius
        u = torch.tensor([math.cos(phi), math.sin(phi)], dtype=DTYPE)
        task = {}
        for split, n in (("train", n_train), ("test", n_test)):
            x = centre + spread * torch.randn(n, 2, generator=gen, dtype=DTYPE)
            task[f"x_{split}"], task[f"y_{split}"] = x, ((x - centre) @ u > 0).long()
        tasks.append(task)
    return tasks


# -- the methods: train on task t, then predict every task ----------------------------------
class Learner:
    """One continual method: ``learn(t, tasks)`` trains on task t (``joint``: on tasks 0..t),
    ``predict(x)`` gives its predictive."""

    def __init__(self, method: str, settings: dict[str, Any], seed: int):
        if method not in METHODS:
            raise unknown("continual method", method, METHODS)
        self.method, self.s, self.seed = method, settings, seed
        self.q = new_posterior(2, settings["hidden"], 2, settings["prior_scale"], seed)
        self.prior = isotropic_prior(self.q)
        if method == "map_finetune":
            torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
            self.net = mlp(2, settings["hidden"], 2).to(DTYPE)

    def learn(self, t: int, tasks: list[dict[str, Tensor]]) -> None:
        s, seed = self.s, self.seed * 1000 + t
        if self.method == "joint":
            x = torch.cat([task["x_train"] for task in tasks[: t + 1]])
            y = torch.cat([task["y_train"] for task in tasks[: t + 1]])
            self.q = new_posterior(2, s["hidden"], 2, s["prior_scale"], self.seed)
        else:
            x, y = tasks[t]["x_train"], tasks[t]["y_train"]
        if self.method == "map_finetune":
            self._map(x, y, seed)
            return
        fit_task(self.q, self.prior, x, y, s["epochs"], s["batch_size"], s["lr"],
                 s["num_particles"], seed)
        if self.method == "vcl":
            self.prior = posterior_as_prior(self.q)  # the belief carried to the next task

    def _map(self, x: Tensor, y: Tensor, seed: int) -> None:
        params = list(self.net.parameters())
        decay = 1.0 / (2 * self.s["prior_scale"] ** 2 * x.shape[0])  # −log N(0, s²) per row

        def loss(idx: Tensor) -> Tensor:
            return (F.cross_entropy(self.net(x[idx]), y[idx])
                    + decay * sum(p.square().sum() for p in params))

        train(params, loss, x.shape[0], self.s["epochs"], self.s["batch_size"], self.s["lr"],
              seed=seed)

    def predict(self, x: Tensor) -> ClassificationPredictive:
        if self.method == "map_finetune":
            with torch.no_grad():
                return ClassificationPredictive(torch.softmax(self.net(x), -1).unsqueeze(0))
        return predict(self.q, x, self.s["num_samples"], self.seed)


def accuracy_matrix(method: str, tasks: list[dict[str, Tensor]], settings: dict[str, Any],
                    seed: int, on_task: Callable[[int], None] | None = None) -> Tensor:
    """A[t, j]: test accuracy on task j after training on tasks 0..t in order (T × T; the
    entries j > t are tasks not seen yet)."""
    learner = Learner(method, settings, seed)
    acc = torch.zeros(len(tasks), len(tasks), dtype=DTYPE)
    for t in range(len(tasks)):
        learner.learn(t, tasks)
        for j, task in enumerate(tasks):
            acc[t, j] = learner.predict(task["x_test"]).accuracy(task["y_test"])
        if on_task is not None:
            on_task(t)
    return acc


# -- the continual_learning recipe ----------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    "conjugate": {"num_batches": 10, "rows_per_batch": 10},
    "methods": list(METHODS), "seeds": 5,
    "tasks": {"num_tasks": 5, "n_train": 200, "n_test": 500},
    "bnn_mlp": {"hidden": 32, "prior_scale": 1.0, "epochs": 100, "batch_size": 32, "lr": 0.01,
                "num_particles": 1, "num_samples": 100},
}


def validate(values: dict[str, Any], where: str) -> dict[str, Any]:
    """The checked settings (types already checked against ``DEFAULTS``)."""
    from ..errors import ZooError

    for m in values["methods"]:
        if m not in METHODS:
            raise ZooError(f"{where}.methods: " + str(unknown("continual method", m, METHODS)))
    ints = [("seeds", values["seeds"])] + [(f"{t}.{k}", v) for t in ("conjugate", "tasks", "bnn_mlp")
                                           for k, v in values[t].items() if isinstance(v, int)]
    for key, v in ints:
        if v < 1:
            raise ZooError(f"{where}.{key} must be >= 1, got {v}")
    for key in ("prior_scale", "lr"):
        if not values["bnn_mlp"][key] > 0:
            raise ZooError(f"{where}.bnn_mlp.{key} must be > 0, got {values['bnn_mlp'][key]}")
    if values["tasks"]["num_tasks"] < 2:
        raise ZooError(f"{where}.tasks.num_tasks must be >= 2 (one task has nothing to forget)")
    return values


def describe(config: dict[str, Any]) -> str:
    c, t, b = config["conjugate"], config["tasks"], config["bnn_mlp"]
    return (f"  (a) beta_binomial, normal_normal, linear_regression: {c['num_batches']} batches of "
            f"{c['rows_per_batch']} rows, sequential vs all at once\n"
            f"  (b) {', '.join(config['methods'])} on {t['num_tasks']} tasks x {config['seeds']} seeds "
            f"({t['n_train']} training, {t['n_test']} test points per task); bnn_mlp {b}")


def _mean_se(values: Tensor) -> str:
    """'mean ± se' over seeds (the first dim); the mean alone for one seed."""
    mean = f"{float(values.mean()):.3f}"
    return mean if len(values) < 2 else f"{mean} ± {float(values.std() / math.sqrt(len(values))):.3f}"


def _matrix_md(acc: Tensor) -> str:
    """A[t, j] (seeds, T, T) as a table of mean ± se over seeds, j > t left blank."""
    tasks = acc.shape[-1]
    lines = ["| after task | " + " | ".join(f"task {j + 1}" for j in range(tasks)) + " | average |",
             "|" + "---|" * (tasks + 2)]
    for t in range(tasks):
        cells = [_mean_se(acc[:, t, j]) if j <= t else "" for j in range(tasks)]
        average = _mean_se(acc[:, t, : t + 1].mean(-1))
        lines.append(f"| {t + 1} | " + " | ".join(cells) + f" | {average} |")
    return "\n".join(lines)


def summary_table(results: dict[str, Tensor]) -> "pd.DataFrame":
    """Per method: average accuracy after the last task, forgetting (mean over tasks j < T of
    A[j, j] − A[T, j]) and accuracy on each task right after learning it, mean ± se over seeds."""
    import pandas as pd

    rows = []
    for method, a in results.items():
        diag = a.diagonal(dim1=1, dim2=2)  # (seeds, T): A[j, j]
        rows.append({"method": method,
                     "average accuracy after the last task": _mean_se(a[:, -1].mean(-1)),
                     "forgetting": _mean_se((diag[:, :-1] - a[:, -1, :-1]).mean(-1)),
                     "accuracy on each task right after it": _mean_se(diag.mean(-1))})
    return pd.DataFrame(rows)


def forgetting_figure(results: dict[str, Tensor], path) -> None:
    """Accuracy on each task (panel) after each training task, per method, mean ± se."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = next(iter(results.values())).shape[-1]
    fig, axes = plt.subplots(1, tasks + 1, figsize=(3.3 * (tasks + 1), 3.3), sharey=True)
    after = torch.arange(1, tasks + 1)
    for i, (method, acc) in enumerate(results.items()):
        se = (acc.std(0) / math.sqrt(acc.shape[0])) if acc.shape[0] > 1 else acc[0] * 0
        for j in range(tasks):
            m, s = acc.mean(0)[j:, j], se[j:, j]
            axes[j].errorbar(after[j:] + 0.06 * (i - 1.5), m, yerr=s, color=f"C{i}", marker="o",
                             ms=3, label=method)
        avg = torch.stack([acc[:, t, : t + 1].mean(-1) for t in range(tasks)], 1)
        axes[-1].errorbar(after + 0.06 * (i - 1.5), avg.mean(0),
                          yerr=avg.std(0) / math.sqrt(len(avg)) if len(avg) > 1 else None,
                          color=f"C{i}", marker="o", ms=3, label=method)
    for j, ax in enumerate(axes):
        ax.set(title=f"task {j + 1}" if j < tasks else "average over tasks seen",
               xlabel="after training on task", xticks=list(after))
    axes[0].set(ylabel="test accuracy")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_and_report(config: dict[str, Any], seed: int, dest, command: str, smoke: bool = False,
                   progress: bool = False):
    """Part (a), the conjugate updates, and part (b), VCL against its baselines; writes
    ``dest`` (report.md, conjugate.csv, accuracy.csv, figures/) atomically."""
    import time
    from pathlib import Path

    import pandas as pd

    from .. import continual as conjugate_updates
    from ..continual import belief_figure, compare_sequential
    from ..inference import versions
    from ..report import SMOKE_BANNER, atomic_directory, md_table

    wall, cpu = time.perf_counter(), time.process_time()
    c, t = config["conjugate"], config["tasks"]
    conj, history = compare_sequential(c["num_batches"], c["rows_per_batch"], seed)
    results, rows = {}, []
    for method in config["methods"]:
        per_seed = []
        for s in range(seed, seed + config["seeds"]):
            tasks = split_tasks(t["num_tasks"], t["n_train"], t["n_test"], s)
            acc = accuracy_matrix(method, tasks, config["bnn_mlp"], s)
            per_seed.append(acc)
            rows += [{"method": method, "seed": s, "after_task": a + 1, "task": j + 1,
                      "accuracy": float(acc[a, j])}
                     for a in range(len(tasks)) for j in range(len(tasks))]
            if progress:
                print(f"  {method} seed {s}: average accuracy after the last task "
                      f"{float(acc[-1].mean()):.3f} ({time.perf_counter() - wall:.0f} s)")
        results[method] = torch.stack(per_seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    final = summary_table(results)
    doc = (__doc__ or "").split("\n\n", 1)[1].strip()
    lines = ["# continual_learning", ""]
    if smoke:
        lines += [SMOKE_BANNER, ""]
    lines += ["Belief updating where the posterior after batch t is the prior for batch t+1: exactly "
              "for the conjugate models (a), approximately by variational continual learning for "
              "a Bayesian neural network (b).", "", "## Settings", "", f"- command: `{command}`",
              "- " + describe(config).strip().replace("\n  ", "\n- "),
              f"- seeds: {seed}..{seed + config['seeds'] - 1}; time: {wall:.0f} s wall, {cpu:.0f} s "
              f"CPU, one process, torch threads: {torch.get_num_threads()}",
              f"- reference: {NGUYEN}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
              "## (a) Conjugate models: sequential equals all at once", "",
              (conjugate_updates.__doc__ or "").split("\n\n", 1)[1].strip(),
              "", f"Each model on its registered synthetic data set ({c['num_batches']} batches of "
              f"{c['rows_per_batch']} rows, seed {seed}); *all at once* is the registered model's "
              "own closed form on all the rows; the differences are float64 round-off.", "",
              md_table(conj), "", "![beliefs](figures/conjugate_beliefs.png)", "",
              "## (b) Variational continual learning for bnn_mlp", "", doc, "",
              "The split task: " + " ".join((split_tasks.__doc__ or "").split(":", 1)[1].split()), "",
              "![forgetting](figures/forgetting.png)", "", md_table(final), "",
              "Forgetting: the accuracy a task loses between the end of its own training and the "
              "end of the last task, averaged over the tasks before the last (negative: it "
              "gained). Chance is 0.5.", ""]
    for method, acc in results.items():
        lines += [f"### {method}: accuracy on task j (column) after training on task t (row)", "",
                  _matrix_md(acc), ""]
    lines += [f"Mean ± standard error over {config['seeds']} seeds. Files: `conjugate.csv`, "
              "`accuracy.csv` (every method, seed, training task and test task), `figures/`.", ""]
    with atomic_directory(Path(dest)) as tmp:
        conj.to_csv(tmp / "conjugate.csv", index=False, lineterminator="\n")
        pd.DataFrame(rows).to_csv(tmp / "accuracy.csv", index=False, float_format="%.6g",
                                  lineterminator="\n")
        (tmp / "figures").mkdir()
        belief_figure(history, tmp / "figures" / "conjugate_beliefs.png")
        forgetting_figure(results, tmp / "figures" / "forgetting.png")
        (tmp / "report.md").write_text("\n".join(lines))
    return Path(dest)
