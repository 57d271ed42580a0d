"""Laplace approximations for networks: all weights or the last layer, with a ``diag``, ``kron``
(KFAC) or ``full`` generalised Gauss–Newton, the linearised (GLM) predictive, and the prior
precision chosen by the Laplace marginal likelihood (MacKay 1992; Ritter, Botev & Barber 2018;
Immer, Bauer et al. 2021; Daxberger et al. 2021, "Laplace Redux").

**MAP.** With the prior θ ~ N(0, λ⁻¹ I) the mode minimises

    L(θ) = Σ_n −log p(y_n | f(x_n, θ))  +  ½ λ ‖θ‖²,

trained by minibatch Adam on L/N = mean NLL + (λ / 2N) ‖θ‖², which is the per-point NLL with L2
weight decay λ/N (Adam's ``weight_decay=w`` adds w·θ to the gradient: the gradient of ½ w ‖θ‖²).
Regression: y ~ Normal(f, σ²), σ learned jointly (as log σ, no prior) unless given; classification:
y ~ Categorical(softmax(f)) over K logits.

``subset="last_layer"`` keeps the body's features fixed and treats only the last Linear's weight and
bias as random (Kristiadi, Hein & Hennig 2020); ``"all"`` treats every weight.

**Curvature (GGN).** H = Σ_n J_nᵀ Λ_n J_n with J_n = ∂f(x_n, θ)/∂θ at θ* (K × d, per-sample
Jacobians by ``torch.func.vmap(jacrev(...))``) and Λ_n = −∂² log p(y_n | f) / ∂f² = I/σ² (Gaussian)
or diag(p_n) − p_n p_nᵀ (softmax). ``structure``:

* ``full``: H itself (d × d);
* ``diag``: diag(H);
* ``kron`` (KFAC; Martens & Grosse 2015, in its exact-GGN form of Botev et al. 2017 and Immer et al.
  2021 §4): per Linear layer s = W a + b, block-diagonal across layers. With ā = [a; 1] the layer
  input and g_n = ∂f_n/∂s_n (K × out, the Jacobian of the output w.r.t. the layer's bias), the
  exact block is Σ_n (ā_n ā_nᵀ) ⊗ (g_nᵀ Λ_n g_n); KFAC replaces the sum of products by the
  product of means over the N training points (exact expectations, no Monte Carlo sampling of
  the output gradient):

      H_ℓ ≈ N · A ⊗ G,    A = (1/N) Σ_n ā_n ā_nᵀ,    G = (1/N) Σ_n g_nᵀ Λ_n g_n

  (column-major vec of M = [W | b]; in matrix form the block acts as M ↦ N · G M A). It is exact
  when ā_n ā_nᵀ or g_nᵀ Λ_n g_n is the same for every n, e.g. the last layer of a one-output
  regression (g_n = 1, Λ_n = 1/σ²). For classification it is cruder: A weighs every point's
  features equally where the GGN weighs them by Λ_n (≈ p(1 − p)), so the last layer defaults to
  ``full``, which is exact there and cheap.

**Posterior.** N(θ*, P⁻¹), P = H + λ I. Every structure is handled through an eigenbasis of H:
H = U diag(e) Uᵀ (U = I for ``diag``; U = U_G ⊗ U_A with e = N g_i a_j for ``kron``, from the
eigendecompositions of G and A, which is how the prior enters a Kronecker product exactly), so

    log|P| = Σ_i log(e_i + λ),    θ − θ* = U diag((e + λ)^-½) z   (z ~ N(0, I)),
    J P⁻¹ Jᵀ = (JU) diag(1/(e + λ)) (JU)ᵀ.

**Evidence** (Laplace; MacKay 1992, Immer et al. 2021 §3), over the d parameters of the subset
(the others, for ``last_layer``, are fixed at the MAP):

    log p(D | λ, σ) ≈ log p(D | θ*) + log p(θ* | λ) + (d/2) log 2π − ½ log|P|
                    = log p(D | θ*) + (d/2) log λ − (λ/2) ‖θ*‖² − ½ Σ_i log(e_i + λ).

For regression H ∝ 1/σ², so e(σ) = e(σ₀) σ₀²/σ² re-uses one curvature for every σ. At fixed θ*
this is concave in (log λ, log σ): −N log σ − RSS e^(−2 log σ)/2 and (d/2) log λ − e^(log λ)‖θ*‖²/2
are concave, and each −½ log(e_i e^(−2 log σ) + e^(log λ)) is minus a log-sum-exp of affine
functions. So a stationary point is the global maximum, and L-BFGS from the best point of a log
grid finds it.

**Predictive** (GLM, Immer, Korzepa & Bauer 2021): f_lin(x, θ) = f(x, θ*) + J(x)(θ − θ*) with
θ − θ* drawn from the posterior; regression gives draws Normal(f_lin, σ²) (epistemic = the
variance of f_lin, whose closed form is ``functional_variance`` = diag(J P⁻¹ Jᵀ); aleatoric = σ²),
classification gives softmax(f_lin). ``link="nn"`` instead pushes the draws through the network.

This module uses inputs and targets as given: standardise them first (the ``zoo.bdl`` convention),
so that a unit-scale prior precision is sensible; ``RegressionPredictive.rescale`` maps back.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Sequence

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..errors import ConvergenceWarning, ZooError, unknown
from ..uncertainty import ClassificationPredictive, RegressionPredictive
from .net import mlp, train

Task = Literal["regression", "classification"]
TASKS = ("regression", "classification")
SUBSETS = ("all", "last_layer")
STRUCTURES = ("diag", "kron", "full")
LINKS = ("glm", "nn")
DTYPE = torch.float64
MAX_FULL_PARAMS = 5000  # a dense d × d precision and its eigendecomposition beyond this is too slow
CHUNK_ELEMENTS = 2**22  # rows per Jacobian chunk are chosen so that rows · K · d stays below this


# ---------------------------------------------------------------------------------------------
# input checks


def _choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise unknown(kind, value, allowed)
    return value


def _inputs(x, in_dim: int | None = None) -> torch.Tensor:
    """x as a finite float64 (N, D) tensor; with ``in_dim`` its width must match the network's."""
    x = torch.as_tensor(x, dtype=DTYPE)
    if x.ndim == 1 and in_dim == 1:
        x = x.unsqueeze(1)
    if x.ndim != 2:
        raise ZooError(f"x must be a 2-d (N, D) array, got shape {tuple(x.shape)}")
    if in_dim is not None and x.shape[1] != in_dim:
        raise ZooError(f"x has {x.shape[1]} columns, but the network was fitted on inputs with "
                       f"{in_dim} columns")
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ZooError(f"x has NaN or infinite values ({int(bad.sum())} rows, first {rows})")
    return x


def _targets(y, n: int, task: Task, num_classes: int | None = None) -> torch.Tensor:
    """y as (N,) float64 targets (regression) or int64 labels in [0, K) (classification)."""
    y = torch.as_tensor(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.squeeze(1)
    if y.ndim != 1 or y.shape[0] != n:
        raise ZooError(f"y must have shape ({n},) to match x, got {tuple(y.shape)}")
    if not torch.isfinite(y.to(DTYPE)).all():
        raise ZooError("y has NaN or infinite values")
    if task == "regression":
        return y.to(DTYPE)
    labels = y.long()
    if (labels != y).any() or (labels < 0).any():
        raise ZooError("classification labels must be integers 0, 1, ..., K-1")
    if num_classes is not None and (labels >= num_classes).any():
        raise ZooError(f"labels must be below the number of classes {num_classes}, "
                       f"got {int(labels.max())}")
    return labels


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def default_structure(subset: str) -> str:
    """"full" for the last layer (exact, and its d = (hidden + 1)·K is small), "kron" for all
    weights (KFAC: memory O(Σ_ℓ in_ℓ² + out_ℓ²) instead of O(d²))."""
    return "full" if subset == "last_layer" else "kron"


def _check_net(net: nn.Module) -> None:
    if not isinstance(net, nn.Sequential) or not isinstance(net[-1], nn.Linear):
        raise ZooError(f"the network must be an nn.Sequential ending in nn.Linear (as "
                       f"zoo.bdl.net.mlp builds), got {type(net).__name__}")
    if any(p.dtype != DTYPE for p in net.parameters()):
        raise ZooError("the network must be float64 (call net.double())")


def _check_kron(head: nn.Module) -> None:
    """KFAC needs every parameter of the Laplace subset to sit in an nn.Linear with a bias."""
    for m in head.modules():
        if list(m.parameters(recurse=False)) and not (isinstance(m, nn.Linear)
                                                      and m.bias is not None):
            raise ZooError(f"structure 'kron' needs every parameter in an nn.Linear with a bias; "
                           f"{type(m).__name__} has parameters")


# ---------------------------------------------------------------------------------------------
# MAP


def _gaussian_nll(y: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """−log Normal(y | mean, σ²) per point."""
    return 0.5 * math.log(2 * math.pi) + log_sigma + 0.5 * ((y - mean) * torch.exp(-log_sigma)) ** 2


def fit_map(x, y, task: Task, hidden: int | Sequence[int] = 50, epochs: int = 200,
            batch_size: int = 64, lr: float = 1e-2, prior_precision: float = 1.0, seed: int = 0,
            sigma: float | None = None,
            num_classes: int | None = None) -> tuple[nn.Sequential, float | None]:
    """MAP training of ``mlp(D, hidden, out)`` (float64) under the prior N(0, λ⁻¹ I).

    Minimises, by minibatch Adam (``zoo.bdl.net.train``), the minibatch estimate of

        L(θ)/N = (1/N) Σ_n −log p(y_n | f(x_n, θ)) + (λ / 2N) ‖θ‖²,

    i.e. per-point NLL plus weight decay λ/N (λ = ``prior_precision``). Regression (one output):
    Gaussian likelihood with the noise sd σ learned as log σ (started at sd(y)) unless ``sigma``
    is given. Classification: K = ``num_classes`` (default max(y) + 1) logits, softmax likelihood.
    Returns the network (in eval mode) and σ (``None`` for classification).
    """
    _choice("task", task, TASKS)
    if prior_precision <= 0:
        raise ZooError(f"prior_precision must be positive, got {prior_precision}")
    if sigma is not None and (task != "regression" or not sigma > 0):
        raise ZooError(f"sigma must be a positive noise sd for regression, got {sigma}")
    x = _inputs(x)
    n = x.shape[0]
    y = _targets(y, n, task, num_classes)
    out_dim = 1 if task == "regression" else (num_classes or int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation; the global RNG is left alone
        torch.manual_seed(seed)
        net = mlp(x.shape[1], hidden, out_dim).to(DTYPE)
    params = list(net.parameters())
    learn_sigma = task == "regression" and sigma is None
    start = sigma if sigma is not None else (
        float(y.std()) if task == "regression" and n > 1 and y.std() > 0 else 1.0)
    log_sigma = torch.tensor(math.log(start), dtype=DTYPE, requires_grad=learn_sigma)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        out = net(x[idx])
        if task == "regression":
            nll = _gaussian_nll(y[idx], out.squeeze(-1), log_sigma).mean()
        else:
            nll = nn.functional.cross_entropy(out, y[idx])
        return nll + prior_precision / (2 * n) * sum((p**2).sum() for p in params)

    train(params + ([log_sigma] if learn_sigma else []), loss, n, epochs, batch_size, lr, seed)
    net.eval()
    return net, (float(log_sigma.detach().exp()) if task == "regression" else None)


# ---------------------------------------------------------------------------------------------
# eigenbases of the curvature blocks


class _Block:
    """One diagonal block of H over the slice ``sl`` of θ, as an eigenbasis U and eigenvalues e
    (in the order of ``to_eigen``'s output). ``to_eigen(v)`` = Uᵀ v and ``from_eigen(w)`` = U w,
    both on the last dimension."""

    sl: slice
    eigenvalues: torch.Tensor

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_eigen(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _DiagBlock(_Block):
    def __init__(self, sl: slice, diagonal: torch.Tensor):
        self.sl, self.eigenvalues = sl, diagonal

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def from_eigen(self, w: torch.Tensor) -> torch.Tensor:
        return w


class _FullBlock(_Block):
    def __init__(self, sl: slice, h: torch.Tensor):
        e, self.u = torch.linalg.eigh(h)
        self.sl, self.eigenvalues = sl, e.clamp_min(0.0)  # a GGN is PSD: negatives are rounding

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.u

    def from_eigen(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.u.T


class _KronBlock(_Block):
    """A Linear layer's block N · A ⊗ G. Its slice of θ is [vec_row(W), b]; as the matrix
    M = [W | b] (out × in+1) the block maps M ↦ N G M A, whose eigenvectors are u_G,i u_A,jᵀ with
    eigenvalues N g_i a_j."""

    def __init__(self, sl: slice, out_dim: int, in_dim: int, a: torch.Tensor, g: torch.Tensor,
                 n: int):
        ea, self.ua = torch.linalg.eigh(a)
        eg, self.ug = torch.linalg.eigh(g)
        self.sl, self.out_dim, self.in_dim = sl, out_dim, in_dim
        self.eigenvalues = (n * torch.outer(eg.clamp_min(0.0), ea.clamp_min(0.0))).flatten()

    def _to_matrix(self, v: torch.Tensor) -> torch.Tensor:
        w = v[..., : self.out_dim * self.in_dim].unflatten(-1, (self.out_dim, self.in_dim))
        return torch.cat([w, v[..., self.out_dim * self.in_dim:].unsqueeze(-1)], -1)

    def _from_matrix(self, m: torch.Tensor) -> torch.Tensor:
        return torch.cat([m[..., :-1].flatten(-2), m[..., -1]], -1)

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return (self.ug.T @ self._to_matrix(v) @ self.ua).flatten(-2)

    def from_eigen(self, w: torch.Tensor) -> torch.Tensor:
        m = w.unflatten(-1, (self.out_dim, self.in_dim + 1))
        return self._from_matrix(self.ug @ m @ self.ua.T)


def _row_chunks(n: int, per_row: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(per_row, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


# ---------------------------------------------------------------------------------------------
# the Laplace approximation


class NetworkLaplace:
    """A Gaussian posterior N(θ*, (H + λI)⁻¹) over all of a network's weights or its last layer.

    ``NetworkLaplace(task, prior_precision).fit(net, x, y, subset, structure, sigma)`` computes the
    GGN at the network's current weights (taken to be the MAP); ``optimize_prior_precision``
    tunes λ (and optionally σ) by the Laplace evidence; ``predict`` gives the GLM predictive.
    See the module docstring for the formulas.
    """

    def __init__(self, task: Task = "regression", prior_precision: float = 1.0):
        self.task = _choice("task", task, TASKS)
        if not prior_precision > 0:
            raise ZooError(f"prior_precision must be positive, got {prior_precision}")
        self.prior_precision = float(prior_precision)
        self.sigma: float | None = None
        self.info: dict = {}
        self._fitted = False

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, net: nn.Sequential, x, y, subset: str = "all", structure: str | None = None,
            sigma: float | None = None) -> "NetworkLaplace":
        """The GGN of the negative log likelihood at ``net``'s weights θ* (taken to be the MAP),
        over ``subset`` ("all" weights, or the "last_layer"'s weight and bias), with
        ``structure`` "diag", "kron" or "full" (default: ``default_structure(subset)``).
        Regression needs the noise sd ``sigma`` (as ``fit_map`` returns)."""
        self.subset = _choice("subset", subset, SUBSETS)
        self.structure = _choice("structure", structure or default_structure(subset), STRUCTURES)
        _check_net(net)
        if self.task == "regression":
            if sigma is None or not sigma > 0:
                raise ZooError(f"regression needs the noise sd sigma > 0, got {sigma}")
            if net[-1].out_features != 1:
                raise ZooError(f"regression needs a one-output network, got "
                               f"{net[-1].out_features} outputs")
        self.net = net.eval()
        self.in_dim, self.out_dim = _linears(net)[0].in_features, net[-1].out_features
        x = _inputs(x, self.in_dim)
        y = _targets(y, x.shape[0], self.task, self.out_dim if self.task != "regression" else None)
        self.n_data = x.shape[0]
        # last_layer: the body's features are fixed, and the head is the last Linear alone
        self._head = net[-1] if self.subset == "last_layer" else net
        self._body = net[:-1] if self.subset == "last_layer" else nn.Identity()
        if self.structure == "kron":
            _check_kron(self._head)
        named = dict(self._head.named_parameters())
        self._names = list(named)
        self._shapes = {k: p.shape for k, p in named.items()}
        self.theta = torch.cat([named[k].detach().flatten() for k in self._names])
        self.n_params = self.theta.numel()
        if self.structure == "full" and self.n_params > MAX_FULL_PARAMS:
            raise ZooError(f"structure 'full' over {self.n_params} parameters is too large "
                           f"(limit {MAX_FULL_PARAMS}); use 'kron' or 'diag', or "
                           f"subset='last_layer'")

        z = self._features(x)
        with torch.no_grad():
            f = self._forward(self.theta, z)
        if self.task == "regression":
            self.sigma = self._sigma_fit = float(sigma)
            self._rss = float(((y - f.squeeze(-1)) ** 2).sum())
        else:
            self._loglik = float(torch.log_softmax(f, -1).gather(1, y[:, None]).sum())
        self._sq_norm = float((self.theta**2).sum())
        self._blocks = self._curvature(z, f)
        self._fitted = True
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._body(x)

    def _forward(self, theta: torch.Tensor, z: torch.Tensor,
                 names: Sequence[str] | None = None) -> torch.Tensor:
        """The head's output (N, K) at features z with the parameters ``names`` (all of the
        subset by default) set from the flat vector ``theta``; the rest keep their values."""
        names = self._names if names is None else names
        shapes = [self._shapes[k] for k in names]
        parts = theta.split([math.prod(s) for s in shapes])
        params = {k: p.view(s) for k, p, s in zip(names, parts, shapes)}
        return functional_call(self._head, params, (z,))

    def _jacobians(self, z: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
        """Per-sample Jacobians ∂f(z_n)/∂θ_names, (N, K, d_names), by vmap over jacrev."""
        names = self._names if names is None else names
        theta = torch.cat([dict(self._head.named_parameters())[k].detach().flatten()
                           for k in names])

        def single(t: torch.Tensor, zn: torch.Tensor) -> torch.Tensor:
            return self._forward(t, zn.unsqueeze(0), names).squeeze(0)

        # jacrev differentiates inside no_grad; no_grad only stops the result from recording a
        # graph through the parameters that are not in ``names`` (kron's weights)
        with torch.no_grad():
            return vmap(jacrev(single), in_dims=(None, 0))(theta, z)

    def _lambda(self, f: torch.Tensor) -> torch.Tensor:
        """Λ_n = −∂² log p(y_n | f_n)/∂f_n², (N, K, K); it does not depend on y."""
        if self.task == "regression":
            return torch.full((f.shape[0], 1, 1), 1.0 / self._sigma_fit**2, dtype=DTYPE)
        p = torch.softmax(f, -1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)

    def _curvature(self, z: torch.Tensor, f: torch.Tensor) -> list[_Block]:
        """The GGN blocks in their eigenbases, accumulated over row chunks of the data."""
        lam = self._lambda(f)
        d, k = self.n_params, self.out_dim
        if self.structure == "kron":
            return self._kron(z, lam)
        acc = torch.zeros(d if self.structure == "diag" else (d, d), dtype=DTYPE)
        for rows in _row_chunks(self.n_data, k * d):
            jac, lr = self._jacobians(z[rows]), lam[rows]
            if self.structure == "diag":
                acc += torch.einsum("nkd,nkl,nld->d", jac, lr, jac)
            else:
                acc += torch.einsum("nkd,nkl,nle->de", jac, lr, jac)
        whole = slice(0, d)
        return [_DiagBlock(whole, acc) if self.structure == "diag" else _FullBlock(whole, acc)]

    def _kron(self, z: torch.Tensor, lam: torch.Tensor) -> list[_Block]:
        """KFAC per Linear: A from the layer inputs (recorded by a forward pass through the
        head), G from the output gradients g_n = ∂f/∂s = ∂f/∂b (per-sample bias Jacobians)."""
        layers = _linears(self._head)
        names = {id(p): k for k, p in self._head.named_parameters()}
        bias_names = [names[id(m.bias)] for m in layers]
        a_sum = [torch.zeros(m.in_features + 1, m.in_features + 1, dtype=DTYPE) for m in layers]
        g_sum = [torch.zeros(m.out_features, m.out_features, dtype=DTYPE) for m in layers]
        n_bias = sum(m.out_features for m in layers)
        for rows in _row_chunks(self.n_data, self.out_dim * n_bias):
            inputs = self._linear_inputs(z[rows])
            jac_b = self._jacobians(z[rows], bias_names).split([m.out_features for m in layers], -1)
            for i, (a, g) in enumerate(zip(inputs, jac_b)):
                a1 = torch.cat([a, torch.ones(a.shape[0], 1, dtype=DTYPE)], 1)
                a_sum[i] += a1.T @ a1
                g_sum[i] += torch.einsum("nki,nkl,nlj->ij", g, lam[rows], g)
        n, blocks, start = self.n_data, [], 0
        for m, a, g in zip(layers, a_sum, g_sum):
            size = m.out_features * (m.in_features + 1)
            blocks.append(_KronBlock(slice(start, start + size), m.out_features, m.in_features,
                                     a / n, g / n, n))
            start += size
        return blocks

    def _linear_inputs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The input of every Linear in the head, in order, for the features z (recorded by
        forward pre-hooks, so any arrangement of the Linears works)."""
        inputs: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
                 for m in _linears(self._head)]
        try:
            with torch.no_grad():
                self._head(z)
        finally:
            for hook in hooks:
                hook.remove()
        return inputs

    # -- the posterior -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ZooError("call fit(net, x, y, ...) first")

    def _eigenvalues(self, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """All eigenvalues e of H (concatenated over blocks) at the noise sd ``sigma``."""
        e = torch.cat([b.eigenvalues for b in self._blocks])
        if self.task == "regression":  # H ∝ 1/σ²
            s = self.sigma if sigma is None else sigma
            e = e * (self._sigma_fit / s) ** 2
        return e

    def _posterior_scale(self) -> list[torch.Tensor]:
        """(e + λ)^-½ per block at the current λ and σ."""
        e = self._eigenvalues() + self.prior_precision
        return list(e.rsqrt().split([b.eigenvalues.numel() for b in self._blocks]))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of θ − θ* ~ N(0, P⁻¹), (S, d): U diag((e + λ)^-½) z per block."""
        self._check_fitted()
        z = torch.randn(num_samples, self.n_params, dtype=DTYPE, generator=generator)
        out = torch.empty_like(z)
        for block, scale in zip(self._blocks, self._posterior_scale()):
            out[:, block.sl] = block.from_eigen(z[:, block.sl] * scale)
        return out

    def _dense(self, shift: float) -> torch.Tensor:
        """U diag(e + shift) Uᵀ as a dense (d, d) matrix: for checks on small networks."""
        self._check_fitted()
        e = self._eigenvalues() + shift
        eye, out = torch.eye(self.n_params, dtype=DTYPE), torch.zeros(self.n_params, self.n_params,
                                                                       dtype=DTYPE)
        for block, eb in zip(self._blocks, e.split([b.eigenvalues.numel() for b in self._blocks])):
            sl = block.sl
            out[sl, sl] = block.from_eigen(block.to_eigen(eye[sl, sl]) * eb)
        return out

    def curvature(self) -> torch.Tensor:
        """The GGN H under the chosen structure, dense (d, d) (diag: a diagonal matrix; kron:
        block diagonal with N · A ⊗ G blocks in θ's order)."""
        return self._dense(0.0)

    def posterior_precision(self) -> torch.Tensor:
        """P = H + λ I, dense (d, d)."""
        return self._dense(self.prior_precision)

    # -- evidence ------------------------------------------------------------------------------

    def _log_marglik(self, log_prior: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """log p(D|θ*) + (d/2) log λ − (λ/2)‖θ*‖² − ½ Σ log(e_i + λ), differentiable in both."""
        lam = log_prior.exp()
        if self.task == "regression":
            sigma = log_sigma.exp()
            loglik = (-0.5 * self.n_data * math.log(2 * math.pi) - self.n_data * log_sigma
                      - 0.5 * self._rss / sigma**2)
            e = self._eigenvalues(sigma)
        else:
            loglik, e = torch.tensor(self._loglik, dtype=DTYPE), self._eigenvalues()
        return (loglik + 0.5 * self.n_params * log_prior - 0.5 * lam * self._sq_norm
                - 0.5 * torch.log(e + lam).sum())

    def log_marginal_likelihood(self, prior_precision: float | None = None,
                                sigma: float | None = None) -> float:
        """The Laplace log evidence at λ = ``prior_precision`` and σ = ``sigma`` (default: the
        current values), with θ* and the curvature fixed."""
        self._check_fitted()
        lam = self.prior_precision if prior_precision is None else prior_precision
        s = (self.sigma or 1.0) if sigma is None else sigma
        if not lam > 0 or not s > 0:
            raise ZooError(f"prior_precision and sigma must be positive, got {lam}, {s}")
        return float(self._log_marglik(torch.tensor(math.log(lam), dtype=DTYPE),
                                       torch.tensor(math.log(s), dtype=DTYPE)))

    def optimize_prior_precision(self, bounds: tuple[float, float] = (1e-4, 1e4),
                                 grid_size: int = 41, optimize_sigma: bool = False) -> float:
        """Set λ (and with ``optimize_sigma``, the regression noise σ) to the maximiser of the
        Laplace evidence: the best of ``grid_size`` log-spaced λ in ``bounds``, then L-BFGS on
        (log λ[, log σ]) — the objective is concave there, so this is its global maximum. A
        maximum at the edge of ``bounds`` is clipped and warned about. Returns λ; ``info`` holds
        the evidence before and after."""
        self._check_fitted()
        lo, hi = bounds
        if not 0 < lo < hi:
            raise ZooError(f"bounds must satisfy 0 < low < high, got {bounds}")
        if optimize_sigma and self.task != "regression":
            raise ZooError("optimize_sigma is for regression: classification has no noise sd")
        before = self.log_marginal_likelihood()
        log_sigma = torch.tensor(math.log(self.sigma or 1.0), dtype=DTYPE)
        grid = torch.linspace(math.log(lo), math.log(hi), grid_size, dtype=DTYPE)
        values = torch.stack([self._log_marglik(g, log_sigma) for g in grid])
        u = self._ascend(torch.stack([grid[values.argmax()], log_sigma]),
                         torch.tensor([True, optimize_sigma]))
        if not math.log(lo) <= u[0] <= math.log(hi):
            warnings.warn(f"the evidence is maximised outside the prior precision bounds {bounds}: "
                          f"clipped to the edge; widen them", ConvergenceWarning, stacklevel=2)
            u[0] = u[0].clamp(math.log(lo), math.log(hi))
            if optimize_sigma:  # the best σ for the clipped λ
                u = self._ascend(u, torch.tensor([False, True]))
        self.prior_precision = float(u[0].exp())
        if optimize_sigma:
            self.sigma = float(u[1].exp())
        self.info = {"log_marglik_before": before,
                     "log_marglik": self.log_marginal_likelihood(),
                     "prior_precision": self.prior_precision, "sigma": self.sigma}
        return self.prior_precision

    def _ascend(self, start: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """L-BFGS (strong Wolfe) on the ``free`` entries of u = (log λ, log σ) for the evidence;
        the start is kept if the search ends anywhere non-finite or worse."""
        u = start.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -self._log_marglik(u[0], u[1])
            loss.backward()
            u.grad[~free] = 0.0  # held entries never move
            return loss

        opt.step(closure)
        u = u.detach()
        with torch.no_grad():
            if not (torch.isfinite(u).all()
                    and self._log_marglik(*u) >= self._log_marglik(*start)):
                return start
        return u

    # -- prediction ----------------------------------------------------------------------------

    def functional_covariance(self, x) -> torch.Tensor:
        """Cov[f_lin(x_n)] = J_n P⁻¹ J_nᵀ per point, (N, K, K), in closed form."""
        self._check_fitted()
        z = self._features(_inputs(x, self.in_dim))
        out = torch.empty(z.shape[0], self.out_dim, self.out_dim, dtype=DTYPE)
        scales = self._posterior_scale()
        for rows in _row_chunks(z.shape[0], self.out_dim * self.n_params):
            jac = self._jacobians(z[rows])
            ju = torch.cat([b.to_eigen(jac[..., b.sl]) * s for b, s in zip(self._blocks, scales)],
                           -1)
            out[rows] = ju @ ju.transpose(-1, -2)
        return out

    def functional_variance(self, x) -> torch.Tensor:
        """Regression: the epistemic variance of the GLM predictive, diag(J P⁻¹ Jᵀ), (N,)."""
        if self.task != "regression":
            raise ZooError("functional_variance is for regression; use functional_covariance")
        return self.functional_covariance(x)[:, 0, 0]

    def predict(self, x, num_samples: int = 100, link: str = "glm",
                seed: int = 0) -> RegressionPredictive | ClassificationPredictive:
        """S = ``num_samples`` draws θ − θ* ~ N(0, P⁻¹) (one set for all points, so each draw is
        a function), pushed through the linearisation f(x, θ*) + J(x)(θ − θ*) (``link="glm"``)
        or through the network itself (``"nn"``). Regression: ``RegressionPredictive`` with
        mean (S, N) and var σ² (S, N); classification: ``ClassificationPredictive`` with
        softmax probabilities (S, N, K)."""
        self._check_fitted()
        _choice("link", link, LINKS)
        if not num_samples >= 1:
            raise ZooError(f"num_samples must be at least 1, got {num_samples}")
        z = self._features(_inputs(x, self.in_dim))
        delta = self.sample(num_samples, torch.Generator().manual_seed(seed))
        f = torch.empty(num_samples, z.shape[0], self.out_dim, dtype=DTYPE)
        for rows in _row_chunks(z.shape[0], self.out_dim * (self.n_params + num_samples)):
            if link == "glm":
                with torch.no_grad():
                    f_map = self._forward(self.theta, z[rows])
                f[:, rows] = f_map + torch.einsum("nkd,sd->snk", self._jacobians(z[rows]), delta)
            else:
                with torch.no_grad():
                    f[:, rows] = vmap(lambda t: self._forward(t, z[rows]))(self.theta + delta)
        if self.task == "regression":
            return RegressionPredictive(f[..., 0], torch.full_like(f[..., 0], self.sigma**2))
        return ClassificationPredictive(torch.softmax(f, -1))


def fit_laplace(x, y, task: Task = "regression", subset: str = "all", structure: str | None = None,
                hidden: int | Sequence[int] = 50, epochs: int = 200, batch_size: int = 64,
                lr: float = 1e-2, prior_precision: float = 1.0, seed: int = 0,
                sigma: float | None = None, optimize_prior: bool = True,
                optimize_sigma: bool = False,
                bounds: tuple[float, float] = (1e-4, 1e4)) -> NetworkLaplace:
    """MAP (``fit_map`` with ``prior_precision`` as the training prior), the GGN over ``subset``
    with ``structure``, then (``optimize_prior``) λ — and with ``optimize_sigma`` σ — by the
    Laplace evidence at the fixed MAP. Returns the fitted ``NetworkLaplace``."""
    _choice("subset", subset, SUBSETS)  # before training, so a typo costs nothing
    _choice("structure", structure or default_structure(subset), STRUCTURES)
    net, sigma = fit_map(x, y, task, hidden=hidden, epochs=epochs, batch_size=batch_size, lr=lr,
                         prior_precision=prior_precision, seed=seed, sigma=sigma)
    la = NetworkLaplace(task, prior_precision).fit(net, x, y, subset, structure, sigma)
    if optimize_prior:
        la.optimize_prior_precision(bounds=bounds, optimize_sigma=optimize_sigma)
    return la
