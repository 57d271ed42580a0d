"""Predictive distributions from S posterior (or ensemble, or dropout) draws, and the split of
their uncertainty into aleatoric and epistemic parts.

Regression: draw s predicts y | x ~ Normal(μ_s(x), σ²_s(x)); the predictive is the equal-weight
mixture over s, whose variance splits exactly (law of total variance) as

    Var[y | x] = E_s[σ²_s]  +  Var_s[μ_s]      (aleatoric + epistemic).

Classification: draw s predicts class probabilities p_s(x); the predictive is p̄ = E_s[p_s] and

    H[p̄]  =  E_s[H[p_s]]  +  I(y; θ | x)       (total = aleatoric + epistemic, the mutual
                                                 information, BALD's acquisition score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class RegressionPredictive:
    mean: torch.Tensor  # (S, N): μ_s(x_n)
    var: torch.Tensor  # (S, N): σ²_s(x_n), the noise variance each draw predicts

    @property
    def num_draws(self) -> int:
        return self.mean.shape[0]

    @property
    def predictive_mean(self) -> torch.Tensor:
        return self.mean.mean(0)

    @property
    def aleatoric(self) -> torch.Tensor:
        return self.var.mean(0)

    @property
    def epistemic(self) -> torch.Tensor:
        return self.mean.var(0, unbiased=False)  # of the S-point mixture, so the split is exact

    @property
    def total(self) -> torch.Tensor:
        return self.aleatoric + self.epistemic

    def log_likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y_n | x_n) under the mixture, per point (N,)."""
        lp = torch.distributions.Normal(self.mean, self.var.sqrt()).log_prob(y.expand_as(self.mean))
        return torch.logsumexp(lp, 0) - math.log(self.num_draws)

    def rmse(self, y: torch.Tensor) -> float:
        return float(((self.predictive_mean - y) ** 2).mean().sqrt())

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """The mixture's CDF at y (N,): the probability integral transform of y."""
        z = (y.expand_as(self.mean) - self.mean) / self.var.sqrt()
        return torch.special.ndtr(z).mean(0)

    def interval(self, level: float, iters: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` interval of the mixture per point, by bisection on its CDF."""
        sd = self.var.sqrt()
        lo_b, hi_b = (self.mean - 10 * sd).min(0).values, (self.mean + 10 * sd).max(0).values
        return (self._quantile((1 - level) / 2, lo_b, hi_b, iters),
                self._quantile((1 + level) / 2, lo_b, hi_b, iters))

    def _quantile(self, q: float, lo: torch.Tensor, hi: torch.Tensor, iters: int) -> torch.Tensor:
        lo, hi = lo.clone(), hi.clone()
        for _ in range(iters):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def rescale(self, scale: float, shift: float) -> "RegressionPredictive":
        """The same predictive for y_original = scale · y + shift (undoing standardisation)."""
        return RegressionPredictive(self.mean * scale + shift, self.var * scale**2)


@dataclass
class ClassificationPredictive:
    probs: torch.Tensor  # (S, N, K): p_s(y = k | x_n)

    @property
    def num_draws(self) -> int:
        return self.probs.shape[0]

    @property
    def mean_probs(self) -> torch.Tensor:
        return self.probs.mean(0)

    @property
    def total(self) -> torch.Tensor:
        """Predictive entropy H[p̄] (N,)."""
        return _entropy(self.mean_probs)

    @property
    def aleatoric(self) -> torch.Tensor:
        """Expected entropy E_s[H[p_s]] (N,)."""
        return _entropy(self.probs).mean(0)

    @property
    def epistemic(self) -> torch.Tensor:
        """Mutual information between y and the parameters (N,), ≥ 0 up to rounding."""
        return self.total - self.aleatoric

    def log_likelihood(self, y: torch.Tensor) -> torch.Tensor:
        return self.mean_probs.gather(-1, y.long().unsqueeze(-1)).squeeze(-1).clamp_min(1e-300).log()

    def accuracy(self, y: torch.Tensor) -> float:
        return float((self.mean_probs.argmax(-1) == y.long()).double().mean())


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1)
