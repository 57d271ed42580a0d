"""The recorded value-and-gradient program (zoo.gradient) against autograd on the model, and
the deterministic cost model that picks chains and threads."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

import zoo
from zoo.fit import default_dtype
from zoo.gradient import Cost, agree, autograd, chains_for, record
from zoo.inference import resolve
from zoo.logdensity import LogJoint


def test_recorded_value_and_gradient_match_autograd_on_a_registered_model():
    with default_dtype(torch.float64):
        spec, data = resolve("eight_schools_noncentered", zoo.load_dataset("eight_schools"))
        lj = LogJoint(spec, data)
        f = torch.func.vmap(lj.point)
        u = torch.rand(16, lj.dim, dtype=torch.float64) * 4 - 2
        recorded, cost = record(f, u)
        fresh = torch.rand(16, lj.dim, dtype=torch.float64) * 4 - 2
        assert agree(recorded, autograd(f), fresh)
        # and against the plain, validated per-point density
        value, _ = recorded(fresh)
        torch.testing.assert_close(value[:2], lj.unconstrained(fresh[:2]), rtol=1e-10, atol=1e-10)
        assert cost.ops > 10 and cost.elements > 0


def test_a_model_that_branches_on_a_latent_is_not_vectorised():
    def branchy(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu if mu > 0 else -mu, 1.0), obs=y)

    with default_dtype(torch.float64):
        spec, data = resolve(branchy, {"y": torch.ones(())})
        lj = LogJoint(spec, data)
        try:
            lj.value_and_grad(4)
            raised = False
        except zoo.ZooError as e:
            raised = "vmap" in str(e)
    assert raised


def test_chains_follow_the_cost_of_a_gradient():
    need = lambda c: max(20, 2000 / c)  # noqa: E731
    small = Cost(ops=150, elements=6_000)  # dispatch-bound: chains are nearly free
    large = Cost(ops=150, elements=3_000_000)  # arithmetic-bound: each chain costs
    assert chains_for(small, 16, 150, need) >= 64
    assert chains_for(large, 16, 150, need) == 16
    assert large.threads(128, 16, available=2) == 2 and small.threads(128, 16, available=2) == 1
