"""Laplace for networks (zoo.bdl.laplace): the GGN against brute force, KFAC where it is exact,
the linear model against Bayesian linear regression in closed form, the evidence and its
optimum, the predictive's behaviour, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.bdl.laplace import NetworkLaplace, fit_laplace, fit_map
from zoo.bdl.net import mlp
from zoo.errors import ZooError

DT = torch.float64


def regression_data(n: int, seed: int = 0, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """y = sin(2 x₁) (+ 0.5 x₂) + N(0, 0.2²), x ~ U(−2, 2)^dim."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g, dtype=DT) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.2 * torch.randn(n, generator=g, dtype=DT)
    if dim > 1:
        y = y + 0.5 * x[:, 1]
    return x, y


def blobs(n: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: N((∓2, 0), 0.7² I)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    centre = torch.stack([4.0 * y - 2, torch.zeros(n)], 1).to(DT)
    return centre + 0.7 * torch.randn(n, 2, generator=g, dtype=DT), y


def random_net(in_dim: int, out_dim: int, hidden=8, seed: int = 0) -> torch.nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp(in_dim, hidden, out_dim).to(DT).eval()


def brute_force_ggn(net: torch.nn.Sequential, x: torch.Tensor, task: str, subset: str,
                    sigma: float = 0.5) -> torch.Tensor:
    """Σ_n J_nᵀ Λ_n J_n with J_n built row by row with autograd.grad, one point at a time."""
    params = list((net[-1] if subset == "last_layer" else net).parameters())
    d = sum(p.numel() for p in params)
    h = torch.zeros(d, d, dtype=DT)
    for xn in x:
        f = net(xn.unsqueeze(0)).squeeze(0)
        jac = torch.stack([torch.cat([g.flatten() for g in
                                      torch.autograd.grad(fk, params, retain_graph=True)])
                           for fk in f])
        if task == "regression":
            lam = torch.eye(1, dtype=DT) / sigma**2
        else:
            p = torch.softmax(f.detach(), -1)
            lam = torch.diag(p) - torch.outer(p, p)
        h += jac.T @ lam @ jac
    return h


# -- curvature --------------------------------------------------------------------------------


@pytest.mark.parametrize("subset", ["all", "last_layer"])
@pytest.mark.parametrize("task,out_dim", [("regression", 1), ("classification", 3)])
def test_ggn_diag_and_full_match_brute_force(task, out_dim, subset):
    x, _ = regression_data(30)
    y = torch.zeros(30) if task == "regression" else torch.arange(30) % out_dim
    net = random_net(2, out_dim)
    exact = brute_force_ggn(net, x, task, subset)
    sigma = 0.5 if task == "regression" else None
    diag = NetworkLaplace(task).fit(net, x, y, subset, "diag", sigma).curvature()
    full = NetworkLaplace(task).fit(net, x, y, subset, "full", sigma).curvature()
    assert torch.allclose(torch.diagonal(diag), torch.diagonal(exact), rtol=0, atol=1e-8)
    assert torch.allclose(diag, torch.diag(torch.diagonal(diag)))  # and nothing off it
    assert torch.allclose(full, exact, rtol=0, atol=1e-8)


def test_kron_is_exact_for_the_last_layer_of_one_output_regression():
    """g_n = 1 and Λ_n = 1/σ² for every n, so Σ_n ā ā ᵀ ⊗ Λ_n = N · A ⊗ G exactly."""
    x, y = regression_data(40)
    net = random_net(2, 1)
    kron = NetworkLaplace().fit(net, x, y, "last_layer", "kron", sigma=0.3)
    full = NetworkLaplace().fit(net, x, y, "last_layer", "full", sigma=0.3)
    assert torch.allclose(kron.curvature(), full.curvature(), rtol=0, atol=1e-8)
    exact = brute_force_ggn(net, x, "regression", "last_layer", 0.3)
    assert torch.allclose(kron.curvature(), exact, rtol=0, atol=1e-8)
    assert kron.log_marginal_likelihood() == pytest.approx(full.log_marginal_likelihood(), abs=1e-8)


@pytest.mark.parametrize("task,out_dim", [("regression", 1), ("classification", 3)])
def test_kron_of_one_point_is_the_exact_block_diagonal(task, out_dim):
    """With N = 1 the mean of products is the product of means: each layer's KFAC block is the
    exact GGN block, which checks the A ⊗ G ordering of hidden layers too; the rest is zero."""
    x, _ = regression_data(1)
    y = torch.zeros(1) if task == "regression" else torch.zeros(1, dtype=torch.long)
    net = random_net(2, out_dim, hidden=[4, 3])
    kron = NetworkLaplace(task).fit(net, x, y, "all", "kron", 0.5 if task == "regression" else None)
    exact = brute_force_ggn(net, x, task, "all")
    mask, start = torch.zeros_like(exact, dtype=torch.bool), 0
    for layer in (m for m in net if isinstance(m, torch.nn.Linear)):  # θ = [W₁, b₁, W₂, b₂, ...]
        size = layer.out_features * (layer.in_features + 1)
        mask[start:start + size, start:start + size] = True
        start += size
    assert torch.allclose(kron.curvature(), torch.where(mask, exact, 0.0), rtol=0, atol=1e-8)


def test_kron_approximates_the_ggn_for_all_weights():
    """More than one point and a hidden layer: KFAC is an approximation (not the GGN), but its
    blocks keep the GGN's trace scale."""
    x, y = regression_data(50)
    net = random_net(2, 1)
    kron = NetworkLaplace().fit(net, x, y, "all", "kron", sigma=0.5).curvature()
    exact = brute_force_ggn(net, x, "regression", "all")
    assert not torch.allclose(kron, exact, atol=1e-3)
    assert torch.trace(kron) == pytest.approx(float(torch.trace(exact)), rel=0.5)


# -- the linear model: Bayesian linear regression in closed form ------------------------------


@pytest.mark.parametrize("subset,structure", [("all", "full"), ("last_layer", "full"),
                                              ("all", "kron"), ("last_layer", "diag")])
def test_linear_model_is_bayesian_linear_regression(subset, structure):
    """No hidden layer: f = wᵀx + b is linear in θ, the GGN is the Hessian and the Laplace
    posterior, GLM predictive and evidence are exact. Diag is exact when the features are
    orthogonal, so that case uses orthogonal columns."""
    n, lam, sigma = 30, 2.0, 0.4
    x, y = regression_data(n, dim=3)
    if structure == "diag":  # orthogonal, zero-mean columns: ΦᵀΦ is diagonal
        x = torch.linalg.qr(x - x.mean(0))[0] * math.sqrt(n)
    phi = torch.cat([x, torch.ones(n, 1, dtype=DT)], 1)  # θ = [w, b] in the net's order
    cov = torch.linalg.inv(phi.T @ phi / sigma**2 + lam * torch.eye(4, dtype=DT))
    mean = cov @ phi.T @ y / sigma**2
    net = mlp(3, [], 1).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(mean[:3].unsqueeze(0))
        net[0].bias.copy_(mean[3:])
    la = NetworkLaplace("regression", lam).fit(net, x, y, subset, structure, sigma)

    xt, _ = regression_data(15, seed=1, dim=3)
    phi_t = torch.cat([xt, torch.ones(15, 1, dtype=DT)], 1)
    exact_var = torch.einsum("ni,ij,nj->n", phi_t, cov, phi_t)
    assert torch.allclose(la.functional_variance(xt), exact_var, rtol=0, atol=1e-8)
    assert torch.allclose(torch.linalg.inv(la.posterior_precision()), cov, rtol=0, atol=1e-8)
    # log p(y) = log N(y | 0, σ² I + Φ Φᵀ / λ)
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=DT), sigma**2 * torch.eye(n, dtype=DT) + phi @ phi.T / lam).log_prob(y)
    assert la.log_marginal_likelihood() == pytest.approx(float(evidence), abs=1e-8)

    pred = la.predict(xt, num_samples=4000, seed=3)  # the sampled GLM predictive
    sd = exact_var.sqrt()
    assert ((pred.predictive_mean - phi_t @ mean).abs() < 5 * sd / math.sqrt(4000)).all()
    assert torch.allclose(pred.epistemic, exact_var, rtol=0.15)
    assert torch.allclose(pred.aleatoric, torch.full((15,), sigma**2, dtype=DT))


def test_fit_map_is_ridge_regression_for_a_linear_model():
    """The prior λ enters as ½ λ ‖θ‖² on the summed NLL (weight decay λ/N per point): a linear
    model trained full-batch reaches the posterior mean (ΦᵀΦ/σ² + λI)⁻¹ Φᵀy/σ²."""
    n, lam, sigma = 30, 20.0, 0.5
    x, y = regression_data(n, dim=3)
    phi = torch.cat([x, torch.ones(n, 1, dtype=DT)], 1)
    mean = torch.linalg.solve(phi.T @ phi / sigma**2 + lam * torch.eye(4, dtype=DT),
                              phi.T @ y / sigma**2)
    net, s = fit_map(x, y, "regression", hidden=[], epochs=1000, batch_size=n, lr=0.01,
                     prior_precision=lam, sigma=sigma)
    theta = torch.cat([net[0].weight.detach().flatten(), net[0].bias.detach()])
    assert s == sigma
    assert torch.allclose(theta, mean, rtol=0, atol=1e-8)  # full-batch Adam on a quadratic: ~1e-16
    # with λ read as a per-point weight decay the answer would be far off
    wrong = torch.linalg.solve(phi.T @ phi / sigma**2 + n * lam * torch.eye(4, dtype=DT),
                               phi.T @ y / sigma**2)
    assert (theta - wrong).abs().max() > 0.1


def test_fit_map_learns_the_noise_sd():
    x, y = regression_data(400)
    _, sigma = fit_map(x, y, "regression", hidden=16, epochs=150, lr=0.01)
    assert 0.15 < sigma < 0.3  # the truth is 0.2


# -- the predictive -----------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["diag", "kron", "full"])
def test_functional_variance_matches_the_sampled_epistemic_variance(structure):
    x, y = regression_data(60)
    la = NetworkLaplace("regression", 1.0).fit(random_net(2, 1), x, y, "all", structure, 0.3)
    xt, _ = regression_data(10, seed=2)
    closed = la.functional_variance(xt)
    sampled = la.predict(xt, num_samples=4000, seed=1).epistemic  # rel. sd √(2/S) ≈ 2%
    assert torch.allclose(sampled, closed, rtol=0.12)
    assert torch.allclose(la.functional_covariance(xt)[:, 0, 0], closed)


@pytest.mark.parametrize("structure", ["diag", "kron"])
def test_nn_link_matches_glm_for_small_perturbations(structure):
    """Under a tight posterior (λ = 10⁶) the network is linear over the draws' scale, so pushing
    the same draws through it (link="nn") gives the GLM's predictive to first order, except
    at points whose ReLUs sit on a kink (hence the median)."""
    x, y = regression_data(60)
    la = NetworkLaplace("regression", 1e6).fit(random_net(2, 1), x, y, "all", structure, 0.3)
    xt, _ = regression_data(10, seed=2)
    glm, nn_ = la.predict(xt, 500, "glm", seed=4), la.predict(xt, 500, "nn", seed=4)
    assert nn_.mean.shape == glm.mean.shape == (500, 10)
    assert (nn_.epistemic / glm.epistemic - 1).abs().median() < 0.01
    draw_gap = (nn_.mean - glm.mean).abs().amax(0) / glm.epistemic.sqrt()  # the same draws
    assert draw_gap.median() < 0.05


def test_epistemic_variance_shrinks_as_data_grows():
    xt = torch.linspace(-1.5, 1.5, 20, dtype=DT).unsqueeze(1)
    closed, sampled = [], []
    for n in (50, 200, 800):
        x, y = regression_data(n, seed=0, dim=1)
        la = fit_laplace(x, y, hidden=8, structure="kron", epochs=max(40, 16000 // n), seed=0)
        closed.append(float(la.functional_variance(xt).mean()))
        sampled.append(float(la.predict(xt, num_samples=500, seed=0).epistemic.mean()))
    assert closed[0] > closed[1] > closed[2]
    assert sampled[0] > sampled[1] > sampled[2]


def test_classification_predictive_and_out_of_data_uncertainty():
    x, y = blobs()
    angle = torch.arange(8, dtype=DT) * math.pi / 4
    far = 15 * torch.stack([angle.cos(), angle.sin()], 1)  # a circle far outside both blobs
    for structure in ("full", "kron"):
        la = fit_laplace(x, y, "classification", "last_layer", structure, hidden=8, epochs=100)
        at_data, away = la.predict(x, 200), la.predict(far, 200)
        nn_link = la.predict(far, 50, link="nn")
        assert (at_data.probs.shape, away.probs.shape, nn_link.probs.shape) == (
            (200, 100, 2), (200, 8, 2), (50, 8, 2))
        for pred in (at_data, away, nn_link):
            assert torch.allclose(pred.probs.sum(-1), torch.ones((), dtype=DT), rtol=0, atol=1e-12)
            assert (pred.epistemic > -1e-12).all()
        assert at_data.accuracy(y) > 0.95
        cov = la.functional_covariance(far)
        assert cov.shape == (8, 2, 2) and (torch.linalg.eigvalsh(cov) > -1e-10).all()
        if structure == "full":
            # the exact last-layer posterior: more mutual information away from the data (about
            # 2.2-2.8x over seeds 0-3). KFAC is not asserted: its A weighs every point's features
            # equally where the GGN weighs them by p(1 - p), and on some seeds it reverses this.
            assert away.epistemic.mean() > 1.5 * at_data.epistemic.mean()


def test_last_layer_glm_and_nn_links_agree():
    """The last layer is linear in its parameters, so linearising it changes nothing."""
    x, y = regression_data(40)
    la = NetworkLaplace("regression").fit(random_net(2, 1), x, y, "last_layer", "kron", 0.3)
    glm, nn_ = la.predict(x, 20, "glm", seed=5), la.predict(x, 20, "nn", seed=5)
    assert torch.allclose(glm.mean, nn_.mean, atol=1e-12)


# -- the evidence -------------------------------------------------------------------------------


def test_prior_precision_optimum_raises_the_evidence_and_is_interior():
    x, y = regression_data(100)
    net, sigma = fit_map(x, y, "regression", hidden=8, epochs=80, seed=0)
    la = NetworkLaplace("regression", prior_precision=100.0).fit(net, x, y, "all", "kron", sigma)
    start = la.log_marginal_likelihood()
    bounds = (1e-4, 1e4)
    lam = la.optimize_prior_precision(bounds=bounds)
    best = la.log_marginal_likelihood()
    assert la.info["log_marglik_before"] == start and la.info["log_marglik"] == best
    assert best > start + 1.0
    assert bounds[0] * 10 < lam < bounds[1] / 10
    # a stationary maximum: no better value nearby or anywhere on a fine grid
    for factor in (0.99, 1.01):
        assert la.log_marginal_likelihood(lam * factor) < best
    grid = torch.logspace(-4, 4, 400).tolist()
    assert max(la.log_marginal_likelihood(g) for g in grid) <= best + 1e-9

    # optimising σ too can only raise the evidence, and its σ is stationary as well
    la.optimize_prior_precision(bounds=bounds, optimize_sigma=True)
    joint = la.log_marginal_likelihood()
    assert joint >= best - 1e-9
    for factor in (0.99, 1.01):
        assert la.log_marginal_likelihood(sigma=la.sigma * factor) < joint


def test_an_optimum_outside_the_bounds_is_clipped_with_a_warning():
    from zoo.errors import ConvergenceWarning

    x, y = regression_data(60)
    la = NetworkLaplace("regression").fit(random_net(2, 1), x, y, "all", "diag", 0.3)
    with pytest.warns(ConvergenceWarning, match="edge"):
        lam = la.optimize_prior_precision(bounds=(1e3, 1e4))
    assert lam == pytest.approx(1e3)
    with pytest.warns(ConvergenceWarning, match="edge"):  # σ is then the best for the clipped λ
        la.optimize_prior_precision(bounds=(1e3, 1e4), optimize_sigma=True)
    for factor in (0.99, 1.01):
        assert la.log_marginal_likelihood(sigma=la.sigma * factor) < la.log_marginal_likelihood()


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    x, y = regression_data(30)
    la = NetworkLaplace("regression").fit(random_net(2, 1), x, y, "all", "diag", 0.3)
    with pytest.raises(ZooError, match=r"x has 3 columns.*inputs with 2 columns"):
        la.predict(torch.zeros(5, 3, dtype=DT))
    with pytest.raises(ZooError, match=r"x has 1 columns.*2 columns"):
        la.functional_variance(torch.zeros(5, 1, dtype=DT))
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ZooError, match="NaN"):
        la.predict(bad)
    with pytest.raises(ZooError, match="NaN"):
        NetworkLaplace("regression").fit(random_net(2, 1), bad, y, "all", "diag", 0.3)
    with pytest.raises(ZooError, match="NaN"):
        fit_map(bad, y, "regression", epochs=1)
    with pytest.raises(ZooError, match="did you mean 'kron'"):
        NetworkLaplace().fit(random_net(2, 1), x, y, "all", "kronn", 0.3)
    with pytest.raises(ZooError, match="unknown subset"):
        NetworkLaplace().fit(random_net(2, 1), x, y, "first_layer", "diag", 0.3)
    with pytest.raises(ZooError, match="sigma"):
        NetworkLaplace("regression").fit(random_net(2, 1), x, y, "all", "diag")
    with pytest.raises(ZooError, match="float64"):
        NetworkLaplace().fit(mlp(2, 8, 1), x, y, "all", "diag", 0.3)
    with pytest.raises(ZooError, match="first"):
        NetworkLaplace().predict(x)
    with pytest.raises(ZooError, match="functional_covariance"):
        NetworkLaplace("classification").fit(random_net(2, 2), x, torch.arange(30) % 2,
                                             "last_layer", "full").functional_variance(x)
    with pytest.raises(ZooError, match="labels"):
        fit_map(x, torch.full((30,), 0.5), "classification", epochs=1)
