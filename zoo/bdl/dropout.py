"""MC dropout (Gal & Ghahramani 2016): a dropout network trained with weight decay is a
variational approximation to a deep Gaussian process, and keeping dropout ON at prediction
draws from that approximate posterior.

Training objective, as in Gal's UCI code (Keras: ``loss='mean_squared_error'`` and an
``l2(reg)`` regulariser on every Dense kernel), per minibatch B:

    L(θ) = (1/|B|) Σ_{n∈B} (y_n − f_θ(x_n))²  +  λ Σ_layers ‖W_layer‖²,

    λ = l² (1 − p) / (2 N τ)                  (the weight decay)

with l the prior length-scale (``length_scale``, 1e-2 as in their code), p the dropout
probability, τ the model precision and N the training size. The paper's derivation (its
appendix: τ = p_keep l² / (2 N λ)) also puts a ½ in front of the squared error and decays the
biases; the published numbers came from the code above, so that is what is reproduced here.
Classification replaces the squared error by the softmax cross-entropy, with the same λ.

Prediction: T stochastic forward passes of the SAME trained network, each with fresh dropout
masks, give f_1(x) … f_T(x). The regression predictive is the mixture

    p(y | x) = (1/T) Σ_t Normal(y; f_t(x), 1/τ),

i.e. ``RegressionPredictive(mean=f (T, N), var=1/τ everywhere)``: aleatoric = 1/τ,
epistemic = Var_t f_t(x). Its log-likelihood is Gal's test log-likelihood exactly,
logsumexp_t[−τ/2 (y − f_t)²] − log T − ½ log 2π + ½ log τ, once the caller has rescaled to the
original units with ``RegressionPredictive.rescale(y_std, y_mean)``.

Units of τ. Gal's grids (``tau_values.txt``: 0.1–0.2 for Boston, 3·10⁴–5·10⁴ for naval) are
precisions of the target in its ORIGINAL units: his code trains on standardised targets but
evaluates N(y; f_t, 1/τ) after un-standardising f_t, and computes λ from that same τ. Pass
``y_std`` (the standard deviation the targets were divided by) to reproduce this: the noise
variance in the fitted, standardised units is then 1/(τ·y_std²), which ``rescale(y_std, ·)``
turns back into 1/τ, while λ uses τ as given (as his code does). With ``y_std=1`` (the default)
τ is the precision of whatever units y is in.

Deviations from Gal's code, all minor: PyTorch's Adam (lr 1e-3, ε 1e-8) for Keras' Adam
(lr 1e-3, ε 1e-7/1e-8 by version); float64 throughout; the default T = 100 passes instead of
10 000 (pass ``num_samples``). Kept as in his code: Glorot-uniform kernels and zero biases (the
Keras Dense defaults), dropout before every Dense layer (the input's included), reshuffled
minibatches of 32 (the code behind the paper's table; his 2018 grid-search rewrite uses 128),
and the epochs of the data folder's ``n_epochs.txt`` (40; protein 20). The paper's 40-epoch
numbers (Boston 2.97 RMSE / −2.46 LL) used hyperparameters from Bayesian optimisation shared by
all splits, which his 2018 README reports were test-set contaminated; his replacement, a grid
search per split as in ``dropout_grid_search``, was run with 10× the epochs (400, batch 128:
Boston 2.90 ± 0.18 / −2.40 ± 0.04), so no clean 40-epoch reference exists.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import ZooError, unknown
from ..uncertainty import ClassificationPredictive, RegressionPredictive
from .net import mlp, train

TASKS = ("regression", "classification")
DTYPE = torch.float64
# Rows × passes evaluated in one forward call at prediction (bounds memory, not results).
_PREDICT_ROWS = 1 << 18


# -- input checks shared with zoo.bdl.ensemble ------------------------------------------------
def check_task(task: str) -> str:
    if task not in TASKS:
        raise unknown("task", task, TASKS)
    return task


def check_inputs(x: Any, name: str = "x", width: int | None = None) -> torch.Tensor:
    """x as a float64 (N, D) tensor; a clear ZooError for a wrong shape or width, or NaN/inf."""
    try:
        t = torch.as_tensor(x, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ZooError(f"{name} must be a numeric (N, D) array: {err}") from None
    if t.ndim != 2:
        hint = " (for one input column use x.reshape(-1, 1))" if t.ndim == 1 else ""
        raise ZooError(f"{name} must be 2-D (N, D); got shape {tuple(t.shape)}{hint}")
    if t.shape[0] == 0:
        raise ZooError(f"{name} has no rows")
    if width is not None and t.shape[1] != width:
        raise ZooError(f"{name} has the wrong width: expected {width} input column(s) (the width "
                       f"the network was trained on), given {t.shape[1]}")
    _check_finite(t, name)
    return t


def check_targets(y: Any, n: int, task: str, num_classes: int | None = None,
                  name: str = "y") -> tuple[torch.Tensor, int | None]:
    """Targets as (N,): float64 for regression, int64 class labels in [0, K) for
    classification; returns them and K (None for regression)."""
    try:
        t = torch.as_tensor(y)
        if t.is_floating_point():  # a list of floats would otherwise become float32
            t = torch.as_tensor(y, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ZooError(f"{name} must be a numeric array: {err}") from None
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ZooError(f"{name} must be 1-D (N,); got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ZooError(f"{name} has {t.shape[0]} rows but x has {n}")
    if t.is_floating_point() or t.is_complex():
        _check_finite(t, name)
    if task == "regression":
        return t.to(DTYPE), None
    if t.is_floating_point() and bool((t != t.round()).any()):
        raise ZooError(f"{name} must hold integer class labels 0..K-1 for classification")
    labels = t.long()
    if bool((labels < 0).any()):
        raise ZooError(f"{name} has negative class labels; expected 0..K-1")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if num_classes is not None and (k < 2 or bool((labels >= k).any())):
        raise ZooError(f"{name} has labels outside 0..{k - 1} (num_classes={num_classes})"
                       if k >= 2 else f"num_classes must be ≥ 2, got {num_classes}")
    if k < 2:
        raise ZooError(f"{name} holds a single class; classification needs ≥ 2 "
                       f"(pass num_classes if some classes are absent)")
    return labels, k


def _check_finite(t: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ZooError(f"{name} contains {int(bad.sum())} NaN or infinite value(s), the first at "
                       f"index {where if len(where) > 1 else where[0]}")


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ZooError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ZooError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_hidden(hidden: int | Sequence[int]) -> int | list[int]:
    sizes = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
    if not sizes or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
                        for h in sizes):
        raise ZooError(f"hidden must be a positive integer or a non-empty list of them, "
                       f"got {hidden!r}")
    return int(hidden) if isinstance(hidden, numbers.Integral) else [int(h) for h in sizes]


def linear_layers(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


# -- the method ---------------------------------------------------------------------------------
def gal_weight_decay(length_scale: float, dropout: float, tau: float, n: int) -> float:
    """λ = l² (1 − p) / (2 N τ): the L2 coefficient on every kernel in Gal's UCI code."""
    return length_scale**2 * (1.0 - dropout) / (2.0 * n * tau)


def l2_penalty(net: nn.Module) -> torch.Tensor:
    """Σ_layers ‖W‖² over the kernels (biases excluded: Keras' ``W_regularizer``)."""
    return torch.stack([(layer.weight**2).sum() for layer in linear_layers(net)]).sum()


def dropout_objective(net: nn.Module, x: torch.Tensor, y: torch.Tensor, weight_decay: float,
                      task: str = "regression") -> torch.Tensor:
    """Gal's minibatch loss: mean squared error (regression) or mean cross-entropy
    (classification) of ``net(x)`` plus λ Σ‖W‖². Dropout acts iff ``net`` is in train mode."""
    out = net(x)
    if task == "regression":
        data_term = ((out.squeeze(-1) - y) ** 2).mean()
    else:
        data_term = nn.functional.cross_entropy(out, y)
    return data_term + weight_decay * l2_penalty(net)


@dataclass
class MCDropoutFit:
    """A trained dropout network and the τ it was trained for.

    ``predict(x, T)`` runs T stochastic passes (dropout ON); ``predict_deterministic(x)`` runs
    the same network with dropout OFF (the "standard dropout" weight-averaged prediction).
    """

    net: nn.Sequential
    task: str
    dropout: float
    tau: float
    length_scale: float
    weight_decay: float  # λ = l² (1 − p) / (2 N τ)
    y_std: float
    in_dim: int
    num_classes: int | None
    seed: int
    history: list[float] = field(default_factory=list)  # mean training loss per epoch

    @property
    def noise_var(self) -> float:
        """1/(τ·y_std²): the regression noise variance in the fitted (standardised) units."""
        return 1.0 / (self.tau * self.y_std**2)

    def predict(self, x: Any, num_samples: int = 100,
                seed: int | None = None) -> RegressionPredictive | ClassificationPredictive:
        """T = ``num_samples`` forward passes with dropout ON, each point with its own masks.

        Regression: ``RegressionPredictive(mean=f (T, N), var=full(1/(τ·y_std²)))``;
        classification: ``ClassificationPredictive(probs (T, N, K))`` of the softmax outputs.
        The masks come from ``seed`` (default: the fit's seed), so a call is reproducible and
        leaves torch's global random state as it was.
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        x = check_inputs(x, "x", self.in_dim)
        n = x.shape[0]
        chunk = max(1, _PREDICT_ROWS // n)
        outs = []
        self.net.train()  # dropout ON: this is the point of MC dropout
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(self.seed if seed is None else seed)
                for start in range(0, num_samples, chunk):
                    t = min(chunk, num_samples - start)
                    out = self.net(x.expand(t, n, self.in_dim).reshape(t * n, self.in_dim))
                    outs.append(out.reshape(t, n, -1))
        finally:
            self.net.eval()
        out = torch.cat(outs)
        if self.task == "regression":
            f = out[..., 0]
            return RegressionPredictive(mean=f, var=torch.full_like(f, self.noise_var))
        return ClassificationPredictive(probs=torch.softmax(out, -1))

    def predict_deterministic(self, x: Any) -> torch.Tensor:
        """The network with dropout OFF: f(x) (N,) for regression, softmax probs (N, K)."""
        x = check_inputs(x, "x", self.in_dim)
        self.net.eval()
        with torch.no_grad():
            out = self.net(x)
        return out[:, 0] if self.task == "regression" else torch.softmax(out, -1)


def fit_mc_dropout(x: Any, y: Any, task: str = "regression", hidden: int | Sequence[int] = 50,
                   dropout: float = 0.05, tau: float = 1.0, length_scale: float = 1e-2,
                   epochs: int = 40, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                   y_std: float = 1.0, num_classes: int | None = None) -> MCDropoutFit:
    """Train a dropout MLP (ReLU, dropout ``p`` before every layer) on Gal's objective.

    ``x`` (N, D) and ``y`` (N,) should be standardised (regression); ``tau`` is the model
    precision in the units of ``y · y_std`` (see the module docstring), ``length_scale`` the
    prior length-scale l; the weight decay is λ = l² (1 − p) / (2 N τ). The initial weights,
    the minibatch order and the training dropout masks all follow ``seed``; torch's global
    random state is left untouched.
    """
    check_task(task)
    hidden = check_hidden(hidden)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
            or not 0.0 <= dropout < 1.0:
        raise ZooError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    tau = check_positive(tau, "tau")
    length_scale = check_positive(length_scale, "length_scale")
    y_std = check_positive(y_std, "y_std")
    lr = check_positive(lr, "lr")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    x = check_inputs(x, "x")
    n, d = x.shape
    y, k = check_targets(y, n, task, num_classes)
    weight_decay = gal_weight_decay(length_scale, float(dropout), tau, n)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = mlp(d, hidden, 1 if task == "regression" else k, float(dropout)).to(DTYPE)
        for layer in linear_layers(net):  # Keras Dense defaults, as in Gal's code
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        net.train()
        history = train(list(net.parameters()),
                        lambda idx: dropout_objective(net, x[idx], y[idx], weight_decay, task),
                        n, epochs, batch_size, lr, seed=seed)
    net.eval()
    return MCDropoutFit(net=net, task=task, dropout=float(dropout), tau=tau,
                        length_scale=length_scale, weight_decay=weight_decay, y_std=y_std,
                        in_dim=d, num_classes=k, seed=seed, history=history)


def dropout_grid_search(x_train: Any, y_train: Any, x_val: Any, y_val: Any,
                        dropout_rates: Iterable[float], tau_values: Iterable[float],
                        num_samples: int = 100, **fit_kwargs: Any
                        ) -> tuple[tuple[float, float], pd.DataFrame]:
    """Gal's model selection: fit every (p, τ) on the training part, score the mean
    validation log-likelihood per point, return ``((best_p, best_τ), table)``.

    The table has one row per grid point: ``dropout``, ``tau``, ``val_ll`` (mean log p(y | x)
    per point; in original units when ``y_std`` is passed, i.e. minus log y_std, which does not
    change the ranking), and ``val_rmse`` (original units) or ``val_accuracy``. Every grid point
    uses the same ``seed`` (common random numbers, so the comparison is not seed noise). The
    protocol then retrains the chosen (p, τ) on the whole training split: the caller does that.
    ``fit_kwargs`` go to ``fit_mc_dropout`` (task, hidden, epochs, y_std, seed, ...).
    """
    rates, taus = list(dropout_rates), list(tau_values)
    if not rates or not taus:
        raise ZooError("dropout_grid_search needs at least one dropout rate and one tau value")
    num_samples = check_positive_int(num_samples, "num_samples")
    for key in ("dropout", "tau"):
        if key in fit_kwargs:
            raise ZooError(f"{key!r} is searched over; give it in the grid, not as a keyword")
    task = check_task(fit_kwargs.get("task", "regression"))
    y_std = check_positive(fit_kwargs.get("y_std", 1.0), "y_std")
    x_train = check_inputs(x_train, "x_train")
    x_val = check_inputs(x_val, "x_val", x_train.shape[1])
    _, k = check_targets(y_train, x_train.shape[0], task, fit_kwargs.get("num_classes"),
                         "y_train")
    # Validation labels are checked against the classes seen in training.
    y_val, _ = check_targets(y_val, x_val.shape[0], task, k, "y_val")
    if task == "classification":
        fit_kwargs = {**fit_kwargs, "num_classes": k}

    rows = []
    for p in rates:
        for tau in taus:
            fit = fit_mc_dropout(x_train, y_train, dropout=float(p), tau=float(tau),
                                 **fit_kwargs)
            pred = fit.predict(x_val, num_samples=num_samples)
            row = {"dropout": float(p), "tau": float(tau)}
            if task == "regression":
                row["val_ll"] = float(pred.log_likelihood(y_val).mean()) - math.log(y_std)
                row["val_rmse"] = pred.rmse(y_val) * y_std
            else:
                row["val_ll"] = float(pred.log_likelihood(y_val).mean())
                row["val_accuracy"] = pred.accuracy(y_val)
            rows.append(row)
    table = pd.DataFrame(rows)
    best = table.iloc[int(table["val_ll"].to_numpy().argmax())]  # first of any ties
    return (float(best["dropout"]), float(best["tau"])), table
