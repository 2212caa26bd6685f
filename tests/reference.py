"""Reference implementations the tests check the fast code against: the main
network's forward pass written straightforwardly, for autograd."""

import torch
import torch.nn.functional as F

from skhypernet._engine import CROSS_ENTROPY, GAUSSIAN_NLL
from skhypernet._model import with_ones


def training_outputs(model, x, noise):
    """Training outputs: noisy input, one weight sample per row (eq. 3).

    This is the straightforward autograd formulation; the training engine
    computes the same values and gradients by hand.
    """
    if model.input_noise_raw is not None:
        x = x + F.softplus(model.input_noise_raw) * noise.input_noise
    codes = model.weight_generator.codes(noise.weight_noise, noise.dropout_uniform)
    return forward_per_row(x, codes, model.weight_generator.heads)


def forward_per_row(x, codes, heads):
    """Main-network outputs with one weight sample per row of ``x``.

    Each row's input is contracted with the heads directly, so per-row
    weights are never materialised: ``out[n] = (c[n] outer [h[n], 1]) @ head``.
    """
    hidden = x
    for index, head in enumerate(heads):
        inputs = with_ones(hidden)
        if codes is None:
            out = inputs @ head[0]
        else:
            outer = (codes[:, :, None] * inputs[:, None, :]).flatten(1)
            out = outer @ head.flatten(0, 1)
        hidden = out if index == len(heads) - 1 else torch.relu(out)
    return hidden


def forward_materialised(x, layers):
    """Reference main-network forward pass with explicit weights.

    ``layers`` holds ``(I + 1, O)`` weight-and-bias matrices, either shared or
    one per row of ``x`` (shape (n, I + 1, O)).
    """
    hidden = x
    for index, layer in enumerate(layers):
        inputs = with_ones(hidden)
        if layer.dim() == 3:
            out = torch.bmm(inputs[:, None, :], layer)[:, 0, :]
        else:
            out = inputs @ layer
        hidden = out if index == len(layers) - 1 else torch.relu(out)
    return hidden


def row_loss(outputs, targets, loss):
    """Per-row loss, averaged over outputs: squared error, cross-entropy, or the
    Gaussian negative log-likelihood without its constant ``log(2 pi) / 2``."""
    if loss == CROSS_ENTROPY:
        return F.cross_entropy(outputs, targets, reduction="none")
    if loss == GAUSSIAN_NLL:
        means, log_variances = GAUSSIAN_NLL.split(outputs)
        scaled = (targets - means).square() * torch.exp(-log_variances)
        return 0.5 * (log_variances + scaled).mean(dim=1)
    return (outputs - targets).square().mean(dim=1)
