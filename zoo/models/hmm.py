"""Hidden Markov models: posteriordb's ``hmm_example`` and the basketball drive models
``hmm_drive_0`` (exponential emissions) and ``hmm_drive_1`` (normal emissions).

The hidden path z[1..T] is summed out by the forward algorithm, written as products of K x K
matrices in log space (the log-sum-exp semiring): with

    M[1][j, k] = log p(z[1] = k) + log p(y[1] | z[1] = k)            (every row alike)
    M[t][j, k] = log p(z[t] = k | z[t-1] = j) + log p(y[t] | z[t] = k),  t >= 2

log p(y[1..t]) = logsumexp_k (M[1] * ... * M[t])[0, k], where * is the log-space matrix
product log(exp(A) @ exp(B)). That product is associative, so the T factors need not be
multiplied left to right in a loop over time: ``hmm_log_likelihood`` reduces them pairwise (a
tree of depth log2 T, as Pyro's ``DiscreteHMM``), and ``log_prefix_products`` gives every
prefix (or suffix) by a work-efficient parallel scan (2 log2 T rounds of batched products),
which yields the one-step predictive terms log p(y[t] | y[1..t-1]). Both are batched over any
leading dims (draws, chains) and differentiable, and neither branches on a value, so the
models run under ``torch.func.vmap``, ``torch.jit.trace`` and an outer plate alike.

The observations are real observed sites (``HiddenMarkovSeries``), not a ``pyro.factor``: their
``log_prob`` is pointwise over time (the chain rule's one-step terms, which sum to the forward
algorithm's log-likelihood), and ``sample`` simulates the path and the emissions, so the
pointwise log-likelihood, PSIS-LOO and the posterior predictive work as for any model. Two
series emitted from one path (the drive models' u and v) are factorised p(u) p(v | u): the site
``v`` is the series given u, its terms log p(v[t] | v[1..t-1], u[1..T]), which needs the backward
messages of u (a suffix scan). The sum of both sites' terms is log p(u, v).

Stan's programs start the recursion from gamma[1, k] = log p(y[1] | z[1] = k), a flat (not
normalised) initial distribution; the sites here start the chain uniformly, p(z[1] = k) = 1/K,
so that the series can be simulated. The log densities differ by the constant log K, and the
posteriors are the same.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

POSTERIORDB = (
    "Magnusson, Torgander, Bürkner, Zhang, Carpenter & Vehtari (2024), posteriordb: testing, "
    "benchmarking and developing Bayesian inference algorithms, arXiv:2407.04967"
)
BBALL_HMM = (
    "Ali (2019), Tagging Basketball Events with HMM in Stan, Stan case study "
    "(mc-stan.org/users/documentation/case-studies/bball-hmm.html; github.com/imadmali/bball-hmm)"
)
STAN_HMM = "Stan Development Team, Stan User's Guide, chapter 'Hidden Markov models'"
RABINER = ("Rabiner (1989), A tutorial on hidden Markov models and selected applications in "
           "speech recognition, Proceedings of the IEEE 77(2), 257-286 (the forward algorithm)")


# --------------------------------------------------------------------------------------------
# The forward algorithm as log-space matrix products
# --------------------------------------------------------------------------------------------


# Internally a sequence of T matrices is laid out (..., K, K, T), time last: with K as small as
# 2, elementwise kernels over a trailing K dim run a loop of 2 per call, which made the scan ~4x
# slower than over a trailing T. The public functions take the natural (..., T, K, K).


def _log_matmul_exp(a: Tensor, b: Tensor) -> Tensor:
    """log(exp(A[t]) @ exp(B[t])) for every t, time-last: (..., I, J, T), (..., J, K, T)."""
    return torch.logsumexp(a.unsqueeze(-2) + b.unsqueeze(-4), dim=-3)


def _log_reduce(mats: Tensor) -> Tensor:
    """M[0] * ... * M[T-1] of time-last ``mats`` (..., K, K, T), pairwise: a tree of depth
    ceil(log2 T), T - 1 products in all."""
    while mats.shape[-1] > 1:  # the loop runs over the tree's depth, a function of the shape
        num = mats.shape[-1]
        paired = _log_matmul_exp(mats[..., 0:num - 1:2], mats[..., 1::2])
        mats = torch.cat([paired, mats[..., num - 1:]], -1) if num % 2 else paired
    return mats[..., 0]


def _log_scan(mats: Tensor, reverse: bool = False) -> Tensor:
    """Every prefix product P[t] = M[0] * ... * M[t] (``reverse``: every suffix M[t] * ... *
    M[T-1]) of time-last ``mats`` (..., K, K, T), by the work-efficient odd-even scan: multiply
    neighbours pairwise, scan the T/2 pairs (recursively), then fill in the even entries,
    P[2i] = P[2i-1] * M[2i]. About 2T products over 2 log2 T rounds (Blelloch 1990)."""
    if reverse:  # a suffix is a prefix of the reversed sequence, multiplied the other way
        return _odd_even_scan(mats.flip(-1), lambda a, b: _log_matmul_exp(b, a)).flip(-1)
    return _odd_even_scan(mats, _log_matmul_exp)


def _odd_even_scan(mats: Tensor, times) -> Tensor:
    num = mats.shape[-1]
    if num <= 1:  # (0: the backward messages of a one-step series have no factors to scan)
        return mats
    odd = _odd_even_scan(times(mats[..., 0:num - 1:2], mats[..., 1::2]), times)  # P[2i+1]
    even = torch.cat([mats[..., :1], times(odd[..., :(num - 1) // 2], mats[..., 2::2])], -1)
    half = num // 2
    both = torch.stack([even[..., :half], odd], dim=-1).flatten(-2)  # P[0], P[1], P[2], ...
    return torch.cat([both, even[..., half:]], -1) if num % 2 else both


def log_matrix_product(mats: Tensor) -> Tensor:
    """M[0] * M[1] * ... * M[T-1] in log space for ``mats`` (..., T, K, K), by pairwise (tree)
    reduction: ceil(log2 T) rounds of batched products instead of T - 1 sequential ones."""
    return _log_reduce(mats.movedim(-3, -1).contiguous())


def log_prefix_products(mats: Tensor, reverse: bool = False) -> Tensor:
    """Every prefix product M[0] * ... * M[t] (``reverse``: every suffix M[t] * ... * M[T-1])
    in log space for ``mats`` (..., T, K, K), in 2 log2 T rounds of batched products."""
    return _log_scan(mats.movedim(-3, -1).contiguous(), reverse).movedim(-1, -3)


def _step_matrices(log_init: Tensor | None, log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """The forward algorithm's T factors M[t] (module docstring), time-last (..., K, K, T)."""
    num_states = log_emit.shape[-1]
    emit = log_emit.transpose(-1, -2)  # (..., K, T)
    first = emit[..., :1] if log_init is None else emit[..., :1] + log_init.unsqueeze(-1)
    rest = log_trans.unsqueeze(-1) + emit[..., 1:].unsqueeze(-3)  # (..., K, K, T-1)
    batch = torch.broadcast_shapes(first.shape[:-2], rest.shape[:-3])
    first = first.unsqueeze(-3).expand(batch + (num_states, num_states, 1))
    return torch.cat([first, rest.expand(batch + rest.shape[-3:])], dim=-1)


def hmm_log_likelihood(log_init: Tensor | None, log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """log p(y[1..T]) = log sum over all K^T hidden paths z of
    p(z[1]) prod_t p(z[t] | z[t-1]) prod_t p(y[t] | z[t]), shape (...).

    ``log_init`` (..., K) is log p(z[1]); None is Stan's flat start (gamma[1, k] = log p(y[1] |
    z[1] = k), no initial term), which the posteriordb programs use. ``log_trans`` (..., K, K)
    is log p(z[t] = k | z[t-1] = j) at [j, k], the same at every t; ``log_emit`` (..., T, K) is
    log p(y[t] | z[t] = k). Leading dims broadcast. The forward algorithm's T factors are
    reduced as a tree (``log_matrix_product``), not a loop over time."""
    mats = _step_matrices(log_init, log_trans, log_emit)
    return _log_reduce(mats)[..., 0, :].logsumexp(-1)


def hmm_log_prefix_likelihoods(log_init: Tensor | None, log_trans: Tensor,
                               log_emit: Tensor) -> Tensor:
    """log p(y[1..t]) for t = 1..T, shape (..., T): the forward algorithm's every prefix, by
    the scan (``log_prefix_products``); arguments as ``hmm_log_likelihood``. Its differences
    are the one-step predictive terms log p(y[t] | y[1..t-1]), which sum to log p(y)."""
    return _log_scan(_step_matrices(log_init, log_trans, log_emit))[..., 0, :, :].logsumexp(-2)


def _log_backward(log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """``hmm_log_backward``, time-last (..., K, T)."""
    later = log_trans.unsqueeze(-1) + log_emit[..., 1:, :].transpose(-1, -2).unsqueeze(-3)
    suffix = _log_scan(later, reverse=True).logsumexp(-2)  # (..., K, T-1)
    return torch.cat([suffix, suffix.new_zeros(suffix.shape[:-1] + (1,))], dim=-1)


def hmm_log_backward(log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """Backward messages beta[t, k] = log p(y[t+1..T] | z[t] = k), shape (..., T, K), with
    beta[T, k] = 0: the suffix products of the factors after t, reduced over their last state."""
    return _log_backward(log_trans, log_emit).transpose(-1, -2)


# --------------------------------------------------------------------------------------------
# A series emitted from a hidden Markov chain, as an observed site
# --------------------------------------------------------------------------------------------


class HiddenMarkovSeries(TorchDistribution):
    """y[1..T] emitted from a hidden Markov chain z, optionally given other series emitted
    from the same z.

    z[1] ~ Categorical(exp(log_init))   (uniform by default)
    z[t] | z[t-1] = j ~ Categorical(exp(log_trans[j]))
    y[t] | z[t] = k ~ emission[k]      (and x[t] | z[t] = k, with log p(x[t] | z[t] = k) =
                                         given_log_emit[t, k], for series x already observed)

    ``log_prob`` is pointwise over time (batch shape (..., T)): the chain rule's terms
    log p(y[t] | y[1..t-1], x[1..T]), whose sum is log p(y | x) (with no x: the forward
    algorithm's log p(y)). ``sample`` draws z from p(z | x) forwards (with the backward
    messages of x) and then y. Parameters broadcast with the batch shape, the time dim
    rightmost: ``log_trans`` (..., K, K) and ``log_init`` (..., K) have a singleton (or no)
    time dim; ``emission`` has batch shape (..., K), one distribution per state (e.g.
    ``Normal(mu, 1)`` with mu (..., K)); ``given_log_emit`` is (..., T, K).
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, log_trans: Tensor, emission: dist.Distribution, num_steps: int,
                 log_init: Tensor | None = None, given_log_emit: Tensor | None = None,
                 validate_args: bool | None = None):
        num_states = log_trans.shape[-1]
        if log_init is None:
            log_init = log_trans.new_full((num_states,), -math.log(num_states))
        self.log_trans, self.emission, self.log_init = log_trans, emission, log_init
        self.num_states, self.num_steps = num_states, int(num_steps)
        self.given_log_emit = given_log_emit
        shapes = [log_trans.shape[:-2], emission.batch_shape[:-1], log_init.shape[:-1],
                  (self.num_steps,)]
        if given_log_emit is not None:
            shapes.append(given_log_emit.shape[:-1])
        super().__init__(torch.broadcast_shapes(*shapes), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return self.emission.support

    def _outside_time(self, x: Tensor, event_dim: int) -> Tensor:
        """A parameter without its time dim (which must be a singleton), the draws' dims in
        front: what the forward algorithm's (..., K, K) / (..., K) arguments expect."""
        if x.dim() == event_dim:
            return x
        if x.shape[-event_dim - 1] != 1:
            raise ValueError(f"HiddenMarkovSeries: a parameter of shape {tuple(x.shape)} varies "
                             "along time; the chain is time-homogeneous")
        return x.squeeze(-event_dim - 1)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_trans = self._outside_time(self.log_trans, 2)
        log_init = self._outside_time(self.log_init, 1)
        log_emit = self.emission.log_prob(value.unsqueeze(-1))  # (..., T, K)
        if self.given_log_emit is None:
            prefix = hmm_log_prefix_likelihoods(log_init, log_trans, log_emit)
            start = torch.zeros_like(prefix[..., :1])
        else:
            # L[t] = log p(x[1..T], y[1..t]) = logsumexp_k alpha_xy[t, k] + beta_x[t, k];
            # L[0] = log p(x), from the backward messages at t = 1.
            given = self.given_log_emit
            joint = _step_matrices(log_init, log_trans, log_emit + given)
            alpha = _log_scan(joint)[..., 0, :, :]  # (..., K, T)
            beta = _log_backward(log_trans, given)  # (..., K, T)
            prefix = (alpha + beta).logsumexp(-2)
            start = (log_init + given[..., 0, :] + beta[..., 0]).logsumexp(-1, keepdim=True)
        terms = torch.diff(prefix, dim=-1, prepend=start)
        return terms.expand(torch.broadcast_shapes(terms.shape, self.batch_shape))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        lead, num_states = shape[:-1], self.num_states
        with torch.no_grad():
            log_trans = self._outside_time(self.log_trans, 2).expand(lead + (num_states,) * 2)
            log_init = self._outside_time(self.log_init, 1).expand(lead + (num_states,))
            if self.given_log_emit is None:
                tilt = log_trans.new_zeros(shape + (num_states,))
            else:  # p(z[t] | z[t-1], x) tilts the chain by x[t]'s density and its future's
                given = self.given_log_emit
                tilt = (given + hmm_log_backward(self._outside_time(self.log_trans, 2), given))
                tilt = tilt.expand(shape + (num_states,))
            # Simulation is sequential by nature: z[t] needs z[t-1].
            z = dist.Categorical(logits=log_init + tilt[..., 0, :]).sample()
            path = [z]
            for t in range(1, self.num_steps):
                row = log_trans.gather(-2, z[..., None, None].expand(lead + (1, num_states)))
                z = dist.Categorical(logits=row.squeeze(-2) + tilt[..., t, :]).sample()
                path.append(z)
            path = torch.stack(path, dim=-1)  # (..., T)
            # every state's emission at every time, (..., T, K); the path picks one per time
            emitted = self.emission.expand(shape + (num_states,)).sample()
            return emitted.gather(-1, path.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------------------------------
# posteriordb's models
# --------------------------------------------------------------------------------------------


def _sizes(model: str, K: int, N: int | None, *series: Tensor | None) -> int:
    # Stan's programs write theta[1], theta[2] and the priors of mu[1], mu[2] (phi, lambda) out
    # by hand, so they are defined for two states only.
    if K != 2:
        raise ZooError(f"{model}: K={K!r}, but the Stan program is written for K = 2 states")
    given = [s for s in series if s is not None]
    if given:
        return given[0].shape[-1]
    if N is None:
        names = "'y'" if model == "hmm_example" else "'u' and 'v'"
        raise ZooError(f"{model}: give the observations {names} or their number 'N'")
    return int(N)


def _transitions(theta1: Tensor, theta2: Tensor) -> Tensor:
    """log theta (..., K, K): row j is p(z[t] | z[t-1] = j), Stan's theta[j] (theta[1] =
    theta1, theta[2] = theta2)."""
    return torch.stack([theta1, theta2], dim=-2).log()


def _normal_terms(name: str, x: Tensor, locs: tuple[float, ...]) -> None:
    """Stan's ``target += normal_lpdf(x[k] | locs[k], 1)``, k = 1..K, on a flat ordered x."""
    pyro.factor(f"{name}_prior", sum(dist.Normal(loc, 1.0).log_prob(x[..., k])
                                     for k, loc in enumerate(locs)))


@register_model(
    observed=("y",),
    data_shapes={"y": ("N",)},
    default_dataset="posteriordb",
    posteriordb=("hmm_example-hmm_example",),
    references=(POSTERIORDB + " (posterior hmm_example-hmm_example)", BBALL_HMM, STAN_HMM,
                RABINER),
)
def hmm_example(K: int = 2, N: int | None = None, y: Tensor | None = None):
    """Two-state hidden Markov model with Normal(mu[k], 1) emissions (posteriordb's hmm_example).

    theta1, theta2 ~ flat on the simplex (Dirichlet(1, 1));  theta[j] = theta_j
    mu ~ flat on 0 < mu[1] < mu[2] (positive_ordered), times Normal(mu[1] | 3, 1)
         Normal(mu[2] | 10, 1)  (Stan's target += normal_lpdf terms, as pyro.factor)
    z[1] ~ Categorical(1/2, 1/2);  z[t] | z[t-1] = j ~ Categorical(theta[j]),  t = 2..N
    y[t] | z[t] = k ~ Normal(mu[k], 1),  t = 1..N,  with z summed out (forward algorithm)

    Site names and shapes are Stan's (theta1[2], theta2[2], mu[2]). The density is Stan's plus
    the constant -log 2 of the uniform start (module docstring). The ordering of mu labels the
    states; its prior is improper in form but, with its two Normal terms, integrable. The
    observed site's log-likelihood is pointwise over time: log p(y[t] | y[1..t-1]).
    """
    num_steps = _sizes("hmm_example", K, N, y)
    theta1 = pyro.sample("theta1", dist.Dirichlet(torch.ones(K)))
    theta2 = pyro.sample("theta2", dist.Dirichlet(torch.ones(K)))
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
    _normal_terms("mu", mu, (3.0, 10.0))
    # The time plate holds the chain rule's one-step terms (they are not independent): it puts
    # the series' dim rightmost, so a batch of draws goes left of it.
    with pyro.plate("time", num_steps, dim=-1):
        return pyro.sample("y", HiddenMarkovSeries(_transitions(theta1, theta2),
                                                   dist.Normal(mu, 1.0), num_steps), obs=y)


def hmm_drive(emission: str, K: int = 2, N: int | None = None, u: Tensor | None = None,
              v: Tensor | None = None, alpha: Tensor | None = None, tau: float | None = None,
              rho: float | None = None):
    """The basketball drive HMM; ``emission`` ("exponential" or "normal") picks the Stan
    program and is bound by ``functools.partial`` (``hmm_drive_0``, ``hmm_drive_1``)."""
    model = _DRIVE_MODELS[emission]
    num_steps = _sizes(model, K, N, u, v)
    if alpha is None:
        raise ZooError(f"{model}: give 'alpha' (K x K), the Dirichlet prior of theta's rows")
    sds = {"tau": tau, "rho": rho}
    if emission == "normal" and None in sds.values():
        raise ZooError(f"{model}: give the emission sds 'tau' and 'rho' (data in the Stan program)")
    if emission == "exponential" and any(s is not None for s in sds.values()):
        raise ZooError(f"{model}: 'tau' and 'rho' are the normal emissions' sds (hmm_drive_1's "
                       "data); the exponential emissions have none")
    theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
    support = (constraints.positive_ordered_vector if emission == "exponential"
               else constraints.ordered_vector)
    phi = pyro.sample("phi", dist.ImproperUniform(support, (), (K,)))
    lam = pyro.sample("lambda", dist.ImproperUniform(support, (), (K,)))
    _normal_terms("phi", phi, (0.0, 3.0))
    _normal_terms("lambda", lam, (0.0, 3.0))
    if emission == "exponential":  # Stan's exponential(beta) is a rate, as torch's
        emit_u, emit_v = dist.Exponential(phi), dist.Exponential(lam)
    else:
        emit_u, emit_v = dist.Normal(phi, tau), dist.Normal(lam, rho)
    log_trans = _transitions(theta1, theta2)
    with pyro.plate("time", num_steps, dim=-1):
        u = pyro.sample("u", HiddenMarkovSeries(log_trans, emit_u, num_steps), obs=u)
        # p(u, v) = p(u) p(v | u): v's site is the series given u, from the same hidden path
        given = emit_u.log_prob(u.unsqueeze(-1))
        return u, pyro.sample("v", HiddenMarkovSeries(log_trans, emit_v, num_steps,
                                                      given_log_emit=given), obs=v)


_DRIVE_MODELS = {"exponential": "hmm_drive_0", "normal": "hmm_drive_1"}
_DRIVE_DOC = """\
Two-state HMM of a basketball player's drives, {family} emissions (posteriordb's {name}).

theta1 ~ Dirichlet(alpha[1, :]);  theta2 ~ Dirichlet(alpha[2, :]);  theta[j] = theta_j
phi, lambda ~ flat on {support}, times Normal(phi[1] | 0, 1) Normal(phi[2] | 3, 1)
    Normal(lambda[1] | 0, 1) Normal(lambda[2] | 3, 1)  (Stan's target += terms, as pyro.factor)
z[1] ~ Categorical(1/2, 1/2);  z[t] | z[t-1] = j ~ Categorical(theta[j]),  t = 2..N
u[t] | z[t] = k ~ {u};  v[t] | z[t] = k ~ {v},  t = 1..N,  z summed out
(u: inverse speed, v: distance to the hoop; state 2 is the drive.)

Site names and shapes are Stan's (theta1[2], theta2[2], phi[2], lambda[2]). The density is
Stan's plus the constant -log 2 of the uniform start. The observed sites factorise
p(u, v) = p(u) p(v | u): u's pointwise terms are log p(u[t] | u[1..t-1]), v's
log p(v[t] | v[1..t-1], u[1..N]).{extra}
"""

for _emission, _name, _family, _support, _u, _v, _extra in (
    ("exponential", "hmm_drive_0", "exponential", "0 < x[1] < x[2] (positive_ordered)",
     "Exponential(rate phi[k])", "Exponential(rate lambda[k])", ""),
    ("normal", "hmm_drive_1", "normal", "x[1] < x[2] (ordered)", "Normal(phi[k], tau)",
     "Normal(lambda[k], rho)",
     "\ntau and rho are data (the sds of u and v; 0.1 in posteriordb's data), not parameters."),
):
    register_model(
        # partials of module-level functions pickle (chains may run in subprocesses)
        functools.partial(hmm_drive, _emission),
        name=_name,
        family="hmm",
        description=_DRIVE_DOC.format(family=_family, name=_name, support=_support, u=_u, v=_v,
                                      extra=_extra),
        observed=("u", "v"),
        data_shapes={"u": ("N",), "v": ("N",), "alpha": ("K", "K")},
        default_dataset="posteriordb",
        posteriordb=(f"bball_drive_event_{_name[-1]}-{_name}",),
        references=(POSTERIORDB + f" (posterior bball_drive_event_{_name[-1]}-{_name})",
                    BBALL_HMM, STAN_HMM, RABINER),
    )
del _emission, _name, _family, _support, _u, _v, _extra
