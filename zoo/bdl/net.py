"""The plain networks every method shares, and a seeded minibatch training loop."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: int | Sequence[int] = 50, out_dim: int = 1,
        dropout: float = 0.0) -> nn.Sequential:
    """in_dim -> hidden (ReLU) ... -> out_dim; with ``dropout`` > 0 a Dropout before every
    Linear, the input's included, as in Gal & Ghahramani's UCI networks."""
    sizes = [in_dim, *([hidden] if isinstance(hidden, int) else hidden)]
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(a, b), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-1], out_dim))
    return nn.Sequential(*layers)


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random partition of range(n) into minibatches (the last may be smaller)."""
    perm = torch.randperm(n, generator=generator)
    return list(perm.split(batch_size))


def train(params: Sequence[torch.Tensor], loss: Callable[[torch.Tensor], torch.Tensor], n: int,
          epochs: int, batch_size: int, lr: float, seed: int = 0,
          weight_decay: float = 0.0) -> list[float]:
    """Adam over ``epochs`` passes of random minibatches; ``loss(idx)`` is the loss of the rows
    ``idx``. Returns the mean loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    history = []
    for _ in range(epochs):
        total = 0.0
        for idx in batches(n, batch_size, gen):
            opt.zero_grad()
            value = loss(idx)
            value.backward()
            opt.step()
            total += float(value.detach()) * len(idx)
        history.append(total / n)
    return history
