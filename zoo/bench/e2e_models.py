"""The end-to-end benchmark's models, each written the way its users write it: a plain one-draw
Pyro model (NumPyro style: ``alpha + X @ beta``, ``a[g]`` with an integer index), the same model
in NumPyro, and its Stan program; and the data, simulated with a fixed seed.

Parameter names agree across the three, so draws can be compared coordinate by coordinate.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch


class BenchModel(NamedTuple):
    label: str
    pyro: Callable
    numpyro: Callable | None  # built lazily: numpyro is an optional extra
    stan: str
    data: Callable[[], dict[str, Any]]  # numpy arrays; integer arrays stay integer


# -- eight schools, non-centered ------------------------------------------------------------

def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_trans, sigma), obs=y)


def eight_schools_numpyro(J, sigma, y=None):
    import numpyro
    import numpyro.distributions as nd

    mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_trans = numpyro.sample("theta_trans", nd.Normal(0.0, 1.0))
        numpyro.sample("y", nd.Normal(mu + tau * theta_trans, sigma), obs=y)


EIGHT_SCHOOLS_STAN = """
data { int<lower=0> J; array[J] real y; array[J] real<lower=0> sigma; }
parameters { real mu; real<lower=0> tau; vector[J] theta_trans; }
model {
  mu ~ normal(0, 5); tau ~ cauchy(0, 5); theta_trans ~ normal(0, 1);
  y ~ normal(mu + tau * theta_trans, sigma);
}
"""


def eight_schools_data() -> dict:
    return {"J": 8, "sigma": np.array([15.0, 10, 16, 11, 9, 11, 10, 18]),
            "y": np.array([28.0, 8, -3, 7, -1, 1, 18, 12])}


# -- logistic regression, N = 1000, D = 25 -------------------------------------------------

def logistic(X, y=None):
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def logistic_numpyro(X, y=None):
    import numpyro
    import numpyro.distributions as nd

    alpha = numpyro.sample("alpha", nd.Normal(0.0, 1.0))
    beta = numpyro.sample("beta", nd.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", nd.Bernoulli(logits=alpha + X @ beta), obs=y)


LOGISTIC_STAN = """
data { int<lower=0> N; int<lower=0> D; matrix[N, D] X; array[N] int<lower=0, upper=1> y; }
parameters { real alpha; vector[D] beta; }
model { alpha ~ normal(0, 1); beta ~ normal(0, 1); y ~ bernoulli_logit(alpha + X * beta); }
"""


def logistic_data() -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 25))
    beta = rng.normal(0, 0.5, size=25)
    y = (rng.uniform(size=1000) < 1 / (1 + np.exp(-(0.3 + X @ beta)))).astype(np.int64)
    return {"X": X, "y": y}


# -- radon-like: 85 groups, N = 900, an integer group index ---------------------------------

def radon(g, x, G, y=None):
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 10.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(5.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(5.0))
    with pyro.plate("groups", G):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a[g] + b * x, sigma_y), obs=y)


def radon_numpyro(g, x, G, y=None):
    import numpyro
    import numpyro.distributions as nd

    mu_a = numpyro.sample("mu_a", nd.Normal(0.0, 10.0))
    sigma_a = numpyro.sample("sigma_a", nd.HalfNormal(5.0))
    b = numpyro.sample("b", nd.Normal(0.0, 10.0))
    sigma_y = numpyro.sample("sigma_y", nd.HalfNormal(5.0))
    with numpyro.plate("groups", G):
        a = numpyro.sample("a", nd.Normal(mu_a, sigma_a))
    with numpyro.plate("data", len(x)):
        numpyro.sample("y", nd.Normal(a[g] + b * x, sigma_y), obs=y)


RADON_STAN = """
data { int<lower=0> N; int<lower=1> G; array[N] int<lower=1, upper=G> g; vector[N] x; vector[N] y; }
parameters { real mu_a; real<lower=0> sigma_a; real b; real<lower=0> sigma_y; vector[G] a; }
model {
  mu_a ~ normal(0, 10); sigma_a ~ normal(0, 5); b ~ normal(0, 10); sigma_y ~ normal(0, 5);
  a ~ normal(mu_a, sigma_a);
  y ~ normal(a[g] + b * x, sigma_y);
}
"""


def radon_data() -> dict:
    rng = np.random.default_rng(1)
    g = rng.integers(0, 85, size=900)
    a = rng.normal(1.5, 0.4, size=85)
    x = rng.integers(0, 2, size=900).astype(float)
    return {"g": g, "x": x, "G": 85, "y": a[g] - 0.7 * x + rng.normal(0, 0.8, size=900)}


# -- linear regression on uncentred years: intercept and slope correlate at ≈ −0.9999 --------

def years(year, y=None):
    alpha = pyro.sample("alpha", dist.Normal(0.0, 1000.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    with pyro.plate("data", len(year)):
        pyro.sample("y", dist.Normal(alpha + beta * year, sigma), obs=y)


def years_numpyro(year, y=None):
    import numpyro
    import numpyro.distributions as nd

    alpha = numpyro.sample("alpha", nd.Normal(0.0, 1000.0))
    beta = numpyro.sample("beta", nd.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", nd.HalfNormal(10.0))
    with numpyro.plate("data", len(year)):
        numpyro.sample("y", nd.Normal(alpha + beta * year, sigma), obs=y)


YEARS_STAN = """
data { int<lower=0> N; vector[N] year; vector[N] y; }
parameters { real alpha; real beta; real<lower=0> sigma; }
model { alpha ~ normal(0, 1000); beta ~ normal(0, 10); sigma ~ normal(0, 10);
        y ~ normal(alpha + beta * year, sigma); }
"""


def years_data() -> dict:
    rng = np.random.default_rng(2)
    year = np.arange(1956, 2016)  # integers, as a user has them
    return {"year": year, "y": 10 + 0.3 * (year - 1985) + rng.normal(0, 2, size=year.size)}


# -- latent GP, N = 100, a Cholesky per draw, Poisson observations --------------------------

def latent_gp(x, y=None):
    rho = pyro.sample("rho", dist.InverseGamma(5.0, 5.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(1.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    n = x.shape[0]
    K = alpha**2 * torch.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2)
    L = torch.linalg.cholesky(K + 1e-6 * torch.eye(n, dtype=x.dtype))
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Poisson((mu + L @ z).exp()), obs=y)


def latent_gp_numpyro(x, y=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    rho = numpyro.sample("rho", nd.InverseGamma(5.0, 5.0))
    alpha = numpyro.sample("alpha", nd.HalfNormal(1.0))
    mu = numpyro.sample("mu", nd.Normal(0.0, 1.0))
    n = x.shape[0]
    K = alpha**2 * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2)
    L = jnp.linalg.cholesky(K + 1e-6 * jnp.eye(n))
    with numpyro.plate("data", n):
        z = numpyro.sample("z", nd.Normal(0.0, 1.0))
        numpyro.sample("y", nd.Poisson(jnp.exp(mu + L @ z)), obs=y)


LATENT_GP_STAN = """
data { int<lower=1> N; array[N] real x; array[N] int<lower=0> y; }
parameters { real<lower=0> rho; real<lower=0> alpha; real mu; vector[N] z; }
model {
  matrix[N, N] K = gp_exp_quad_cov(x, alpha, rho);
  for (n in 1:N) K[n, n] += 1e-6;
  rho ~ inv_gamma(5, 5); alpha ~ normal(0, 1); mu ~ normal(0, 1); z ~ std_normal();
  y ~ poisson_log(mu + cholesky_decompose(K) * z);
}
"""


def latent_gp_data() -> dict:
    rng = np.random.default_rng(3)
    x = np.linspace(0, 10, 100)
    f = 1.0 + 0.8 * np.sin(x) + 0.3 * np.cos(2.3 * x)
    return {"x": x, "y": rng.poisson(np.exp(f)).astype(np.int64)}


MODELS: dict[str, BenchModel] = {
    "eight_schools": BenchModel("eight schools, non-centered", eight_schools, eight_schools_numpyro,
                                EIGHT_SCHOOLS_STAN, eight_schools_data),
    "logistic": BenchModel("logistic regression, N=1000, D=25", logistic, logistic_numpyro,
                           LOGISTIC_STAN, logistic_data),
    "radon": BenchModel("radon-like, 85 groups, N=900, a[g]", radon, radon_numpyro, RADON_STAN,
                        radon_data),
    "years": BenchModel("linear regression on uncentred years, N=60", years, years_numpyro,
                        YEARS_STAN, years_data),
    "latent_gp": BenchModel("latent GP, N=100, Poisson", latent_gp, latent_gp_numpyro,
                            LATENT_GP_STAN, latent_gp_data),
}


def stan_data(name: str, data: dict) -> dict:
    """The data as the Stan program declares it (sizes, 1-based indices)."""
    out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in data.items()}
    if name == "logistic":
        out.update(N=len(data["y"]), D=data["X"].shape[1])
    elif name == "radon":
        out.update(N=len(data["y"]), g=(data["g"] + 1).tolist())
    elif name in ("years", "latent_gp"):
        out["N"] = len(data["y"])
    return out
