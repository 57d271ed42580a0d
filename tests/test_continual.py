"""Continual learning: exact sequential updates of the conjugate models (zoo.continual) and
variational continual learning for bnn_mlp (zoo.bdl.continual)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo import run
from zoo.bdl import bbb
from zoo.bdl import continual as vcl
from zoo.continual import (BetaBelief, NormalBelief, nig_log_predictive, prior_belief, sequential,
                           split)
from zoo.fit import default_dtype
from zoo.models.conjugate import (NIGPosterior, nig_log_joint_posterior, nig_posterior,
                                  nig_update)

TOL = 1e-10
F64 = torch.float64


def _batches_of(data: dict, sizes: list[int], rows: tuple[str, ...]) -> list[dict]:
    """Uneven consecutive batches (split() makes even ones)."""
    out, start = [], 0
    for size in sizes:
        out.append({**{k: v for k, v in data.items() if k not in rows},
                    **{k: data[k][start:start + size] for k in rows}})
        start += size
    return out


SIZES = [1, 7, 3, 12, 2]  # 25 rows


def test_beta_binomial_sequential_equals_all_at_once():
    gen = torch.Generator().manual_seed(1)
    n = torch.randint(1, 30, (25,), generator=gen).to(F64)
    y = torch.binomial(n, torch.full_like(n, 0.3), generator=gen)
    beliefs, log_preds = sequential("beta_binomial", BetaBelief(torch.tensor(2.0, dtype=F64),
                                                                torch.tensor(3.0, dtype=F64)),
                                    _batches_of({"n": n, "y": y}, SIZES, ("n", "y")))
    with default_dtype(F64):
        spec = zoo.get_model("beta_binomial")
        exact = spec.exact_posterior(n=n, y=y, prior_a=2.0, prior_b=3.0)["p"]
        evidence = spec.exact_log_evidence(n=n, y=y, prior_a=2.0, prior_b=3.0)
    assert abs(float(beliefs[-1].a - exact.concentration1)) < TOL
    assert abs(float(beliefs[-1].b - exact.concentration0)) < TOL
    assert abs(float(beliefs[-1].a) - (2.0 + float(y.sum()))) < TOL  # Beta(a + Σy, ...) by hand
    assert abs(sum(log_preds) - evidence) < TOL
    assert len(beliefs) == len(SIZES) + 1 and beliefs[0].a == 2.0


def test_normal_normal_sequential_equals_all_at_once_with_per_point_noise():
    gen = torch.Generator().manual_seed(2)
    y = 1.5 + torch.randn(25, generator=gen, dtype=F64)
    sigma = 0.5 + torch.rand(25, generator=gen, dtype=F64)  # one sd per observation
    beliefs, log_preds = sequential(
        "normal_normal", NormalBelief(torch.tensor(-1.0, dtype=F64), torch.tensor(4.0, dtype=F64)),
        _batches_of({"y": y, "sigma": sigma}, SIZES, ("y", "sigma")))
    with default_dtype(F64):
        spec = zoo.get_model("normal_normal")
        args = {"y": y, "sigma": sigma, "prior_loc": -1.0, "prior_scale": 4.0}
        exact = spec.exact_posterior(**args)["mu"]
        evidence = spec.exact_log_evidence(**args)
    assert abs(float(beliefs[-1].loc - exact.loc)) < TOL
    assert abs(float(beliefs[-1].scale - exact.scale)) < TOL
    precision = 1 / 16 + float((1 / sigma**2).sum())  # precisions add, by hand
    assert abs(float(beliefs[-1].scale) - precision**-0.5) < TOL
    assert abs(sum(log_preds) - evidence) < TOL


def test_nig_sequential_equals_all_at_once():
    gen = torch.Generator().manual_seed(3)
    x = torch.cat([torch.ones(25, 1, dtype=F64), torch.randn(25, 2, generator=gen, dtype=F64)], 1)
    y = x @ torch.tensor([0.5, -1.0, 2.0], dtype=F64) + 0.3 * torch.randn(25, generator=gen, dtype=F64)
    with default_dtype(F64):
        prior = prior_belief("linear_regression", num_features=3, prior_a=2.0, prior_b=0.5,
                             prior_scale=3.0)
        beliefs, log_preds = sequential("linear_regression", prior,
                                        _batches_of({"x": x, "y": y}, SIZES, ("x", "y")))
        exact = nig_posterior(x, y, 2.0, 0.5, 3.0)
        evidence = zoo.get_model("linear_regression").exact_log_evidence(
            x=x, y=y, prior_a=2.0, prior_b=0.5, prior_scale=3.0)
    for got, want in zip(beliefs[-1], exact):
        assert float((got - want).abs().max()) < TOL
    assert abs(sum(log_preds) - evidence) < TOL


def test_nig_update_obeys_bayes_rule_under_a_general_prior():
    """A prior with a mean and a full covariance (what a posterior is): at any (beta, sigma2),
    log posterior − log likelihood − log prior = −log p(y), the same constant everywhere."""
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 3, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64)
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    prior = NIGPosterior(torch.tensor([0.3, -0.7, 1.1], dtype=F64), a @ a.T + torch.eye(3, dtype=F64),
                         torch.tensor(2.5, dtype=F64), torch.tensor(1.5, dtype=F64))
    post = nig_update(x, y, prior)
    log_evidence = nig_log_predictive(x, y, prior)
    for _ in range(5):
        beta = torch.randn(3, generator=gen, dtype=F64)
        sigma2 = 0.2 + torch.rand((), generator=gen, dtype=F64)
        log_lik = dist.Normal(x @ beta, sigma2.sqrt()).log_prob(y).sum()
        bayes = (nig_log_joint_posterior(post, beta, sigma2) - log_lik
                 - nig_log_joint_posterior(prior, beta, sigma2))
        assert abs(float(bayes) + log_evidence) < 1e-10


def test_split_cuts_rows_and_copies_the_rest():
    data = {"y": torch.arange(10.0), "sigma": 1.0}
    batches = split(data, 3, ("y",))
    assert [b["y"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(b["sigma"] == 1.0 for b in batches)


# -- VCL ------------------------------------------------------------------------------------
def _q(seed: int = 0) -> bbb.MeanField:
    q = vcl.new_posterior(2, 4, 2, 1.0, seed)
    with torch.no_grad():  # spread the scales, so the KL sees more than one sigma
        q.theta[q.num_weights:] = torch.randn(q.num_weights, dtype=F64,
                                              generator=torch.Generator().manual_seed(seed))
    return q


def test_vcl_prior_is_the_previous_posterior_so_the_kl_starts_at_zero():
    q = _q()
    prior = vcl.posterior_as_prior(q)
    assert torch.equal(prior.loc, q.loc) and torch.equal(prior.scale, q.scale())
    with torch.no_grad():
        assert float(vcl.kl_gaussian(q.loc, q.scale(), prior)) == 0.0
    # The learner carries exactly its fitted q to the next task.
    tasks = vcl.split_tasks(2, 20, 10, 0)
    settings = {"hidden": 4, "prior_scale": 1.0, "epochs": 2, "batch_size": 10, "lr": 0.01,
                "num_particles": 1, "num_samples": 5}
    learner = vcl.Learner("vcl", settings, 0)
    assert torch.equal(learner.prior.loc, torch.zeros(learner.q.num_weights, dtype=F64))
    learner.learn(0, tasks)
    assert torch.equal(learner.prior.loc, learner.q.loc)
    assert torch.equal(learner.prior.scale, learner.q.scale())
    finetune = vcl.Learner("finetune", settings, 0)
    finetune.learn(0, tasks)
    assert torch.equal(finetune.prior.loc, torch.zeros(finetune.q.num_weights, dtype=F64))


def test_kl_is_the_closed_form_gaussian_kl_by_hand():
    q, p = _q(0), vcl.posterior_as_prior(_q(1))
    by_hand = 0.0
    for mu, sigma, m, s in zip(q.loc.tolist(), q.scale().tolist(), p.loc.tolist(), p.scale.tolist()):
        by_hand += math.log(s / sigma) + (sigma**2 + (mu - m) ** 2) / (2 * s**2) - 0.5
    with torch.no_grad():
        kl = float(vcl.kl_gaussian(q.loc, q.scale(), p))
    assert kl > 1.0 and abs(kl - by_hand) < 1e-10 * by_hand
    torch_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.loc.detach(), q.scale().detach()),
        torch.distributions.Normal(p.loc, p.scale)).sum()
    assert abs(kl - float(torch_kl)) < 1e-10 * kl


def test_first_task_objective_is_bayes_by_backprop():
    """Under bnn_mlp's own prior N(0, s²) the VCL loss is bbb.negative_elbo at the same noise."""
    q = _q()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 2, generator=gen, dtype=F64)
    y = (x[:, 0] > 0).long()
    noise = bbb.draw_noise(q, 16, 3, True, gen)
    ours = vcl.negative_elbo(q, vcl.isotropic_prior(q), x, y, 100, noise)
    theirs = bbb.negative_elbo(q, x, y, 100, "classification", num_particles=3, noise=noise)
    assert abs(float((ours - theirs.total).detach())) < 1e-10 * abs(float(theirs.total.detach()))


def test_smoke_run_writes_the_report(tmp_path):
    assert run.main(["continual_learning", "--smoke", "--out", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / "continual_learning-smoke"
    text = (folder / "report.md").read_text()
    assert "Smoke run" in text and "### vcl: accuracy on task j" in text
    conj = pd.read_csv(folder / "conjugate.csv")
    assert (conj["within 1e-10"] == "yes").all() and set(conj.model) == {
        "beta_binomial", "normal_normal", "linear_regression"}
    acc = pd.read_csv(folder / "accuracy.csv")
    assert set(acc.method) == set(vcl.METHODS) and len(acc) == 4 * 2 * 2
    for figure in ("conjugate_beliefs.png", "forgetting.png"):
        assert (folder / "figures" / figure).stat().st_size > 1000


@pytest.mark.parametrize("setting, message", [
    ("experiment.methods=['vlc']", "unknown continual method 'vlc' (did you mean 'vcl'?)"),
    ("experiment.bnn_mlp.epoch=3", "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("experiment.tasks.num_tasks=1", "num_tasks must be >= 2"),
    ("experiment.bnn_mlp.lr=0", "bnn_mlp.lr must be > 0"),
    ("experiment.conjugate=3", "experiment.conjugate must be a table"),
    ("experiment.seeds=2.5", "experiment.seeds must be int, got 2.5"),
])
def test_bad_keys_are_one_line_errors(tmp_path, capsys, setting, message):
    assert run.main(["continual_learning", "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "continual_learning.toml" in err, err
    assert not list(Path(tmp_path).iterdir())
