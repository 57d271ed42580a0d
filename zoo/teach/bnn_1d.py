"""Walk-through: a Bayesian neural network on 1-D data with a gap (``bnn_mlp``, Bayes by backprop).

    W, b ~ Normal(0, s);  f(x) = relu(x W1ᵀ + b1) W2 + b2;  τ ~ Gamma(1, 0.01);  y ~ Normal(f(x), τ^-½)

Each posterior draw s is a whole network with mean μ_s(x) and noise variance σ²_s = 1/τ_s; the
predictive is their mixture, whose variance splits exactly (``zoo.uncertainty``) as
E_s[σ²_s] (aleatoric) + Var_s[μ_s] (epistemic). The walk-through measures the epistemic sd at
the data, in the gap between the two clusters and beyond the ends (``epistemic_by_region``),
for Bayes by backprop (mean-field VI, ``zoo.bdl.bbb.fit_bbb``) and, beside it, a deep ensemble
and the zoo's HMC on the same model.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import ZooError
from ..uncertainty import RegressionPredictive
from .document import Document, fmt, plt
from .shared import checks_text, validate_inference

TITLE = "A Bayesian neural network on data with a gap: what it knows and what it doesn't"
INTRO = """
A small neural network is fitted to 1-D data that come in two clusters with a gap between
them. Instead of one set of weights, Bayes by backprop learns a distribution over weights, so
the network can say how unsure it is. The walk-through separates that uncertainty into noise in
the data (aleatoric) and ignorance about the function (epistemic), and checks whether the
ignorance grows where there are no data, as it should. Every number and figure below was
computed when this report was built; the text around them was written once.
"""

DEFAULTS: dict[str, Any] = {
    "n": 100,  # toy_regression_1d: x uniform on [-3, -1] and [1, 3], y = sin(1.5 x) + noise
    "noise": 0.1,
    "hidden": 50,
    "prior_scale": 1.0,
    "epochs": 2000,
    "batch_size": 32,
    "lr": 0.01,
    "predictive_samples": 500,
    "x_max": 6.0,  # predictions on [-x_max, x_max]
    "grid_points": 241,
    "prior_functions": 20,
    "test_points": 1000,
    "ensemble": True,  # a deep ensemble beside Bayes by backprop
    "ensemble_members": 5,
    "ensemble_epochs": 400,
    "hmc": True,  # the zoo's MCMC on bnn_mlp (a smaller network): the reference posterior
    "hmc_hidden": 20,
    "method": "chees",
    "inference": {"num_warmup": 300, "num_samples": 50, "num_chains": 64},
}
GAP_MARGIN = 0.5  # grid points this far from every training x, inside their range, are "the gap"
NEAR = 0.1  # grid points this close to a training x are "at the data"
BEYOND = 1.0  # grid points this far outside the training range are "beyond the ends"


def validate(settings: Mapping[str, Any], where: str) -> None:
    s = settings
    for key in ("n", "hidden", "epochs", "batch_size", "predictive_samples", "grid_points",
                "prior_functions", "test_points", "ensemble_members", "ensemble_epochs", "hmc_hidden"):
        if s[key] < 2:
            raise ZooError(f"{where}: teach.{key} must be >= 2, got {s[key]}")
    for key in ("noise", "prior_scale", "lr", "x_max"):
        if not s[key] > 0:
            raise ZooError(f"{where}: teach.{key} must be > 0, got {s[key]}")
    if s["x_max"] <= 3 + BEYOND:
        raise ZooError(f"{where}: teach.x_max must exceed {3 + BEYOND} (the data reach |x| = 3)")
    validate_inference(s, where)


# -- the computations ---------------------------------------------------------------------------
def regions(grid: np.ndarray, x_train: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over ``grid``: at the data (within NEAR of a training x), in the gap
    (inside the training range, at least GAP_MARGIN from every training x), beyond the ends
    (more than BEYOND outside the range)."""
    grid, x_train = np.asarray(grid, dtype=float), np.asarray(x_train, dtype=float).ravel()
    dist = np.abs(grid[:, None] - x_train[None, :]).min(1)
    lo, hi = x_train.min(), x_train.max()
    inside = (grid >= lo) & (grid <= hi)
    return {"at the data": dist <= NEAR, "in the gap": inside & (dist >= GAP_MARGIN),
            "beyond the ends": (grid < lo - BEYOND) | (grid > hi + BEYOND)}


def epistemic_by_region(grid: np.ndarray, x_train: np.ndarray, pred: RegressionPredictive
                        ) -> dict[str, float]:
    """The mean epistemic sd sqrt(Var_s[μ_s(x)]) over the grid points of each region."""
    sd = pred.epistemic.sqrt().detach().cpu().numpy()
    out = {}
    for name, mask in regions(grid, x_train).items():
        if not mask.any():
            raise ZooError(f"no grid point lies {name}: widen the grid or add points")
        out[name] = float(sd[mask].mean())
    return out


def _region_sd(grid: np.ndarray, x_train: np.ndarray, values: np.ndarray) -> dict[str, float]:
    return {k: float(values[m].mean()) for k, m in regions(grid, x_train).items()}


def truth(x: np.ndarray) -> np.ndarray:
    return np.sin(1.5 * x)  # toy_regression_1d's function


# -- the report -----------------------------------------------------------------------------------
def build(doc: Document, s: Mapping[str, Any], seed: int) -> None:
    import pyro

    import zoo
    from ..bdl.bbb import fit_bbb
    from ..models.networks import predictive_from_draws
    from ..tracing import prior_draws

    data = zoo.load_dataset("toy_regression_1d", n=s["n"], noise=s["noise"], seed=seed)
    x, y = data["x"], data["y"]
    xn, yn = x[:, 0].numpy(), y.numpy()
    grid = np.linspace(-s["x_max"], s["x_max"], s["grid_points"])
    gt = torch.as_tensor(grid[:, None])
    x_mean, x_sd, y_mean, y_sd = float(x.mean()), float(x.std()), float(y.mean()), float(y.std())

    doc.heading("The model")
    doc.text(f"""
        The zoo's `bnn_mlp` is a network with one hidden layer of {s['hidden']} ReLU units. Every
        weight and bias gets a Normal prior, and the noise precision τ a Gamma prior:
        """)
    doc.math(r"W_1, b_1, W_2, b_2 \sim \mathcal N(0, s^2), \qquad "
             r"f_w(x) = \mathrm{relu}(x W_1^\top + b_1)\, W_2 + b_2",
             r"\tau \sim \mathrm{Gamma}(1, 0.01), \qquad y_n \sim \mathcal N\big(f_w(x_n),\ 1/\tau\big)")
    doc.text(f"""
        with s = {fmt(s['prior_scale'])}, on inputs and targets standardised to mean 0 and sd 1.
        The posterior over the {3 * s['hidden'] + 1} weights has no closed form and many
        symmetric modes (permuting hidden units gives the same function). *Bayes by backprop*
        (Blundell et al. 2015) approximates it by a Gaussian per weight, q(w) = N(m, softplus(ρ)²),
        chosen to maximise the evidence lower bound
        """)
    doc.math(r"\mathrm{ELBO}(q) = \mathbb E_{q(w)}\big[\log p(y \mid x, w)\big] - "
             r"\mathrm{KL}\big(q(w)\,\|\,p(w)\big) \;\le\; \log p(y \mid x)")
    doc.text("""
        The first term rewards weights that fit the data, the second keeps q close to the prior:
        a weight the data do not need keeps its prior width.
        """)

    doc.heading("Prior predictive: functions before any data")
    pyro.set_rng_seed(seed)
    z_grid = (gt - x_mean) / x_sd
    prior = prior_draws(zoo.get_model("bnn_mlp").fn,
                        {"x": z_grid, "hidden": s["hidden"], "prior_scale": s["prior_scale"]},
                        max(s["prior_functions"], 200))
    prior_pred = predictive_from_draws(z_grid, prior).rescale(y_sd, y_mean)
    f_prior = prior_pred.mean.numpy()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for j in range(s["prior_functions"]):
        ax.plot(grid, f_prior[j], color="C0", alpha=0.5, lw=1)
    ax.plot(xn, yn, "k.", ms=3, label="data (for scale)")
    ax.set(xlabel="x", ylabel="y", ylim=(-15, 15),
           title=f"{s['prior_functions']} functions f_w(x), w from the prior")
    ax.legend(fontsize=8)
    doc.figure(fig, "prior_functions", """Networks with weights drawn from the prior (the model's
        `pyro.sample` statements run forward), in the data's units. The data are shown only for
        scale; the prior has not seen them.""")
    prior_sd = _region_sd(grid, xn, f_prior.std(0))
    doc.text(f"""
        The prior puts no shape on the function except the ReLU's piecewise-linearity: the
        functions are kinked lines, and their spread (sd over prior draws,
        {doc.number('prior_function_sd_at_data', prior_sd['at the data'], 3)} at the data's x,
        {fmt(prior_sd['beyond the ends'], 3)} beyond the ends) is
        {fmt(prior_sd['at the data'] / float(y.std()), 2)} times the data's sd at the data's x.
        Everything the fitted network knows about sin-like wiggles will come from the data.
        """)

    doc.heading("The data")
    doc.text(f"""
        {s['n']} points from the registered data set `toy_regression_1d`: x uniform on
        [−3, −1] ∪ [1, 3], y = sin(1.5 x) + Normal(0, {fmt(s['noise'])}) noise. There are no data
        in the gap (−1, 1) nor beyond |x| = 3. In what follows, "at the data" means grid points
        within {NEAR} of a training x, "in the gap" points at least {GAP_MARGIN} from every
        training x (here |x| < {fmt(1 - GAP_MARGIN)}), "beyond the ends" points more than {BEYOND}
        outside the data's range.
        """)

    doc.heading("Bayes by backprop")
    bbb = fit_bbb(x, y, hidden=s["hidden"], prior_scale=s["prior_scale"], epochs=s["epochs"],
                  batch_size=s["batch_size"], lr=s["lr"], seed=seed, dtype=torch.float64)
    # Each method as a function of new x -> its predictive, so the grid and the test data
    # below go through the same code.
    predictors = {"Bayes by backprop": lambda xt: bbb.predict(xt, s["predictive_samples"], seed=seed)}
    elbo = np.asarray(bbb.elbo_history)
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.plot(np.arange(1, len(elbo) + 1), elbo, lw=0.8)
    tail = elbo[len(elbo) // 10:]
    ax.set(xlabel="epoch", ylabel="ELBO (standardised units)",
           ylim=(np.percentile(tail, 1) - 0.1 * np.ptp(tail), tail.max() + 0.1 * np.ptp(tail)))
    doc.figure(fig, "elbo", f"""The ELBO per epoch ({s['epochs']} epochs, minibatches of
        {s['batch_size']}, Adam at lr {fmt(s['lr'])}). A curve still rising at the end would
        mean training stopped too early.""")
    doc.text(f"""
        Fitted by `zoo.bdl.bbb.fit_bbb(x, y, hidden={s['hidden']}, epochs={s['epochs']})`; the
        final ELBO is {doc.number('elbo_final', float(elbo[-5:].mean()), 4)} (mean of the last 5
        epochs). The predictive below uses {s['predictive_samples']} networks drawn from q.
        """)

    doc.heading("Aleatoric and epistemic uncertainty")
    doc.text("""
        Each network w_s drawn from q predicts a Normal with mean μ_s(x) = f_{w_s}(x) and variance
        σ²_s = 1/τ_s. The predictive is their average, and its variance splits exactly (the law of
        total variance, `zoo.uncertainty.RegressionPredictive`):
        """)
    doc.math(r"\mathrm{Var}[y \mid x] = \underbrace{\mathbb E_s[\sigma^2_s]}_{\text{aleatoric}} + "
             r"\underbrace{\mathrm{Var}_s[\mu_s(x)]}_{\text{epistemic}}")
    doc.text("""
        *Aleatoric* uncertainty is the noise in the data themselves: more data would not reduce
        it. *Epistemic* uncertainty is the disagreement between plausible networks: it is what
        we do not know about the function, and it should be small where data pin the function
        down and large where they do not.
        """)
    if s["ensemble"]:
        from ..bdl.ensemble import fit_ensemble

        ens = fit_ensemble(x, y, members=s["ensemble_members"], hidden=s["hidden"],
                           epochs=s["ensemble_epochs"], batch_size=s["batch_size"], seed=seed)
        predictors["deep ensemble"] = ens.predict
    hmc_fit = None
    if s["hmc"]:
        from ..models.networks import predictive
        from .shared import mcmc_fit

        z = (x - x_mean) / x_sd
        hmc_fit = mcmc_fit("bnn_mlp", {"x": z, "y": (y - y_mean) / y_sd, "hidden": s["hmc_hidden"],
                                       "prior_scale": s["prior_scale"]}, s, seed)
        predictors[f"HMC ({s['method']})"] = lambda xt: predictive(
            hmc_fit, ((xt - x_mean) / x_sd).numpy()).rescale(y_sd, y_mean)
    preds = {name: f(gt) for name, f in predictors.items()}

    fig, axes = plt.subplots(len(preds), 2, figsize=(12, 3.3 * len(preds)), squeeze=False)
    table, ale_growth = [], {}
    for (name, pred), (a, b) in zip(preds.items(), axes):
        mean, ale, epi = (pred.predictive_mean.numpy(), pred.aleatoric.sqrt().numpy(),
                          pred.epistemic.sqrt().numpy())
        tot = pred.total.sqrt().numpy()
        a.fill_between(grid, mean - 2 * tot, mean + 2 * tot, color="C0", alpha=0.15, label="±2 sd total")
        a.fill_between(grid, mean - 2 * epi, mean + 2 * epi, color="C3", alpha=0.35, label="±2 sd epistemic")
        a.plot(grid, mean, "C3", lw=1.2, label="predictive mean")
        a.plot(grid, truth(grid), "k:", lw=1, label="true sin(1.5x)")
        a.plot(xn, yn, "k.", ms=3)
        a.set(ylim=(-3, 3), title=name, xlabel="x")
        b.plot(grid, epi, "C3", label="epistemic sd")
        b.plot(grid, ale, "C0", label="aleatoric sd")
        b.plot(grid, tot, "k--", lw=0.8, label="total sd")
        b.axvspan(-1, 1, color="0.92", zorder=0)
        b.set(yscale="log", xlabel="x (grey: the gap)", title=f"{name}: the split")
        a.legend(fontsize=7, loc="lower left")
        b.legend(fontsize=7, loc="upper center")
        ep = epistemic_by_region(grid, xn, pred)
        al = _region_sd(grid, xn, ale)
        ale_growth[name] = al["beyond the ends"] / al["at the data"]
        key = name.split(" (")[0].lower().replace(" ", "_")
        table.append({"method": name, "epistemic sd at the data": ep["at the data"],
                      "in the gap": ep["in the gap"], "beyond the ends": ep["beyond the ends"],
                      "gap ÷ data": doc.record(f"{key}_gap_ratio", ep["in the gap"] / ep["at the data"]),
                      "beyond ÷ data": doc.record(f"{key}_beyond_ratio",
                                                  ep["beyond the ends"] / ep["at the data"]),
                      "aleatoric sd at the data": al["at the data"]})
        doc.number(f"{key}_epistemic_sd_at_data", ep["at the data"])
        doc.number(f"{key}_epistemic_sd_gap", ep["in the gap"])
        doc.number(f"{key}_epistemic_sd_beyond", ep["beyond the ends"])
    doc.figure(fig, "predictive", """Left: the predictive mean, ±2 sd of the epistemic part
        (red) and of the total (blue), the data and the true function. Right: the two sds
        along x, on a log scale.""")
    doc.table(table, digits=3)
    bbb_row = table[0]
    beyond_grows, gap_grows = bbb_row["beyond ÷ data"] > 1, bbb_row["gap ÷ data"] > 1
    beyond_note = ("the networks q allows agree where they were trained and fan out where "
                   "nothing constrains them" if beyond_grows else "it does **not** grow")
    doc.text(f"""
        Beyond the ends, Bayes by backprop's epistemic sd is {fmt(bbb_row['beyond ÷ data'], 3)}
        times its value at the data: {beyond_note}.
        In the gap it is {fmt(bbb_row['gap ÷ data'], 3)} times its value at the data:
        {"it grows there too" if gap_grows else "it does **not** grow between the clusters"}.
        Its aleatoric sd at the data is {fmt(bbb_row['aleatoric sd at the data'], 3)}, against a
        true noise sd of {fmt(s['noise'])}.
        """)
    doc.text(f"""
        A Gaussian per weight, independent across weights (mean-field), is known to be a poor
        fit for the gap: for a one-hidden-layer network, Foong et al. (2019, "'In-between'
        uncertainty in Bayesian neural networks") show that mean-field q cannot make the
        function's variance between two clusters much larger than at them{"" if gap_grows else
        ", which is what we see here"}.
        """)
    if len(table) > 1:
        others = "; ".join(f"{r['method']}: {fmt(r['gap ÷ data'], 3)} in the gap and "
                           f"{fmt(r['beyond ÷ data'], 3)} beyond the ends" for r in table[1:])
        doc.text(f"""
            The other rows answer the same question with other approximations to the posterior.
            Their epistemic sd, as a multiple of its value at the data, is: {others}.
            """)
    for name, ratio in ale_growth.items():
        if ratio > 1.5:
            doc.text(f"""
                The {name}'s *aleatoric* sd is {fmt(ratio, 3)} times larger beyond the ends than
                at the data: each member predicts its own noise variance as a function of x, and
                away from the data nothing holds that prediction to the truth, so part of the
                ensemble's ignorance is reported as noise.
                """)
    if hmc_fit is not None:
        doc.text(f"""
            The HMC row is the zoo's `{s['method']}` sampler on `bnn_mlp` with
            {s['hmc_hidden']} hidden units ({hmc_fit.num_chains} chains × {hmc_fit.num_draws}
            draws), the closest thing here to the exact posterior (of a smaller network: the
            prior over functions changes with the width). {checks_text(hmc_fit, "HMC")} For a
            network, failed checks are expected: chains settle in different (often symmetric)
            modes, which R-hat reports as disagreement; pooled, the chains still sample functions
            from many modes, which is what the predictive needs.
            """)

    doc.heading("Checks on fresh data")
    test = zoo.load_dataset("toy_regression_1d", n=s["test_points"], noise=s["noise"], seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    x_gap = rng.uniform(-1 + GAP_MARGIN, 1 - GAP_MARGIN, s["test_points"])
    y_gap = truth(x_gap) + s["noise"] * rng.standard_normal(s["test_points"])
    doc.text(f"""
        A predictive distribution is honest if its intervals contain new observations as often
        as they claim. We draw {s['test_points']} fresh points from the same generator (x in the
        two clusters) and, as a probe the training data never covered, {s['test_points']} points
        from the same function in the gap (|x| < {fmt(1 - GAP_MARGIN)}). For each, the fraction
        inside the central 90% predictive interval (0.9 is honest) and the mean log predictive
        density (higher is better):
        """)
    rows = []
    for name, pred in preds.items():
        row = {"method": name}
        for label, xt, yt in (("clusters", test["x"], test["y"]),
                              ("gap", torch.as_tensor(x_gap[:, None]), torch.as_tensor(y_gap))):
            p = predictors[name](xt)
            lo, hi = p.interval(0.9)
            key = name.split(" (")[0].lower().replace(" ", "_")
            row[f"90% coverage, {label}"] = doc.record(f"{key}_coverage_{label}",
                                                       float(((yt >= lo) & (yt <= hi)).double().mean()))
            row[f"log density, {label}"] = float(p.log_likelihood(yt).mean())
        rows.append(row)
    doc.table(rows, digits=3)
    tol = 3 * math.sqrt(0.9 * 0.1 / s["test_points"])  # 3 binomial sds of an honest coverage
    verdicts = []
    for r in rows:
        for label in ("clusters", "gap"):
            c = r[f"90% coverage, {label}"]
            if c > 0.9 + tol:
                verdicts.append(f"{r['method']} in the {label}: too wide ({fmt(c, 3)})")
            elif c < 0.9 - tol:
                verdicts.append(f"{r['method']} in the {label}: too narrow ({fmt(c, 3)})")
    doc.text(f"""
        With {s['test_points']} points an honest 90% interval covers 0.9 ± {fmt(tol, 2)} (three
        binomial standard deviations). Outside that range: {"; ".join(verdicts) or "none"}. Too
        wide wastes information; too narrow is overconfidence, the more dangerous failure.
        """)

    doc.heading("What the data changed")
    q = bbb.q
    sd_ratio = (q.scale() / q.prior_sd).numpy()
    kl = float(q.kl(bbb.settings["noise_shape"], bbb.settings["noise_rate"]))
    post_sd = _region_sd(grid, xn, preds["Bayes by backprop"].epistemic.sqrt().numpy())
    removed_at_data = 1 - (post_sd["at the data"] / prior_sd["at the data"]) ** 2
    kept_note = ("A weight near its prior width is one the data do not need: the KL term pulls "
                 "it back to the prior." if np.mean(sd_ratio > 0.9) > 0.05 else
                 "Few weights are back at their prior width: q starts every sd at softplus(−5) ≈ "
                 "0.0067, and the KL term widens them only as far as the fit to the data allows.")
    doc.text(f"""
        - KL(q ‖ prior), the price the ELBO pays for moving away from the prior, is
          {doc.number('kl_q_prior_nats', kl, 4)} nats over {q.num_weights} weights and τ.
        - Per weight, the posterior sd divided by the prior sd has median
          {doc.number('weight_sd_ratio_median', float(np.median(sd_ratio)), 3)}; the data narrowed
          {doc.number('fraction_weights_narrowed_below_half', float(np.mean(sd_ratio < 0.5)), 3)}
          of the weights to less than half their prior sd, and left
          {fmt(float(np.mean(sd_ratio > 0.9)), 3)} within 10% of it. {kept_note}
        - In function space, the sd of f(x) fell from {fmt(prior_sd['at the data'], 3)} (prior)
          to {fmt(post_sd['at the data'], 3)} (q) at the data, a fraction
          {doc.number('function_variance_removed_at_data', removed_at_data, 4)}
          of the prior variance removed; beyond the ends from {fmt(prior_sd['beyond the ends'], 3)}
          to {fmt(post_sd['beyond the ends'], 3)}
          ({fmt(1 - (post_sd['beyond the ends'] / prior_sd['beyond the ends'])**2, 4)} removed):
          even there the posterior is far narrower than the very wide prior, because the
          function must still pass through the data next door.
        """)

