"""Torch modules: weight generators and the main network they parametrise.

Every main-network layer ``l`` (fan-in ``I``, fan-out ``O``) is a linear
function of a per-row *code* ``c`` of size ``C``::

    W_l = sum_k c_k * weight_heads[l][k]      # (I, O)
    b_l = sum_k c_k * bias_heads[l][k]        # (O,)

For the hypernetwork the code is ``[z, 1]`` where ``z`` is the last hidden
layer of the hypernetwork MLP, so the heads are exactly the hypernetwork's
linear output layer of size P (all weights and biases of the main network),
split per main-network layer.  For the point-estimate baseline the code is
the constant ``[1]`` and the heads are the ordinary weights.

Keeping the output layer split this way lets training contract each row's
input with the heads directly, without ever materialising the per-row weight
matrices (eq. 3 of the paper), while prediction materialises one weight set
per Monte Carlo sample (eq. 4).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Byte budget of one chunk of float64 intermediate values at prediction time.
PREDICT_CHUNK_BYTES = 64 * 2**20


def layer_shapes(n_inputs, hidden_layer_sizes, n_outputs):
    """Return ``[(fan_in, fan_out), ...]`` of the main network's layers."""
    sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
    return list(zip(sizes[:-1], sizes[1:]))


def inverse_softplus(value):
    """Return ``s`` such that ``softplus(s) == value`` (for ``value > 0``)."""
    return value + math.log(-math.expm1(-value))


def _uniform(shape, bound, generator):
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class WeightGenerator(nn.Module):
    """Main-network parameters as linear functions of a per-row code.

    Parameters
    ----------
    shapes : list of (int, int)
        ``(fan_in, fan_out)`` of each main-network layer.
    code_size : int
        Length ``C`` of the code vector.
    """

    def __init__(self, shapes, code_size):
        super().__init__()
        self.shapes = [tuple(shape) for shape in shapes]
        self.weight_heads = nn.ParameterList(
            nn.Parameter(torch.empty(code_size, fan_in, fan_out))
            for fan_in, fan_out in self.shapes
        )
        self.bias_heads = nn.ParameterList(
            nn.Parameter(torch.empty(code_size, fan_out)) for _, fan_out in self.shapes
        )

    @property
    def n_main_parameters(self):
        """Number P of weights and biases of the main network."""
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in self.shapes)

    def _init_constant_code_heads(self, generator):
        # The head of the constant code entry is the mean main network: give it
        # the initialisation of torch.nn.Linear.
        for weight, bias, (fan_in, _) in zip(
            self.weight_heads, self.bias_heads, self.shapes
        ):
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                weight[-1].copy_(_uniform(weight.shape[1:], bound, generator))
                bias[-1].copy_(_uniform(bias.shape[1:], bound, generator))

    def sample_codes(self, n_samples, generator, training):
        """Return ``(n_samples, C)`` codes, or None for shared weights."""
        raise NotImplementedError

    def materialise(self, codes):
        """Return ``[(W, b), ...]`` with ``W`` of shape (n, I, O), ``b`` (n, O)."""
        if codes is None:
            return [(w[0], b[0]) for w, b in zip(self.weight_heads, self.bias_heads)]
        return [
            (torch.tensordot(codes, w, dims=1), codes @ b)
            for w, b in zip(self.weight_heads, self.bias_heads)
        ]

    def flat_weights(self, codes):
        """Return the main-network parameter vectors, shape (n, P).

        The layout is, layer after layer, the weight matrix (row-major,
        ``fan_in x fan_out``) followed by the bias vector.
        """
        parts = []
        for weight, bias in self.materialise(codes):
            if codes is None:
                weight, bias = weight[None], bias[None]
            parts += [weight.flatten(1), bias]
        return torch.cat(parts, dim=1)


class PointEstimate(WeightGenerator):
    """Ordinary point-estimate weights (the paper's "SGD" baseline)."""

    def __init__(self, shapes, generator):
        super().__init__(shapes, code_size=1)
        self._init_constant_code_heads(generator)

    def sample_codes(self, n_samples, generator, training):
        return None


class HyperNetwork(WeightGenerator):
    """Hypernetwork ``g(eps; Theta)`` producing all main-network weights.

    ``eps ~ N(0, I)`` of size ``noise_dim`` is multiplied by a learned softplus
    scale (initially 1), passed through a ReLU MLP with dropout on its hidden
    units during training, and mapped linearly to the P main-network
    parameters.

    The linear output layer is initialised so that, at the start, a sampled
    main network looks like a ``torch.nn.Linear``-initialised one: the part of
    the output independent of ``z`` (the output bias) has nn.Linear's
    distribution, and the ``z``-dependent part spreads each weight across
    samples by about the same amount, ``1 / sqrt(3 * fan_in)``.  The hidden
    layers use He initialisation so that this spread does not shrink with
    depth.

    Parameters
    ----------
    shapes : list of (int, int)
        Main-network layer shapes.
    noise_dim : int
        Dimension of ``eps``.
    hidden_layer_sizes : tuple of int
        Hidden layers of the hypernetwork.
    dropout : float
        Dropout probability of the hidden units during training.
    generator : torch.Generator
        Source of the initial parameters.
    """

    def __init__(self, shapes, noise_dim, hidden_layer_sizes, dropout, generator):
        sizes = [noise_dim, *hidden_layer_sizes]
        super().__init__(shapes, code_size=sizes[-1] + 1)
        self.noise_dim = noise_dim
        self.dropout = dropout
        self.noise_scale_raw = nn.Parameter(torch.tensor(inverse_softplus(1.0)))
        self.hidden_weights = nn.ParameterList(
            nn.Parameter(_uniform((n_in, n_out), math.sqrt(6.0 / n_in), generator))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.hidden_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_out)) for n_out in sizes[1:]
        )
        self._init_constant_code_heads(generator)
        n_features = sizes[-1]
        for weight, bias, (fan_in, _) in zip(
            self.weight_heads, self.bias_heads, self.shapes
        ):
            bound = 1.0 / math.sqrt(n_features * fan_in)
            with torch.no_grad():
                weight[:-1].copy_(_uniform(weight[:-1].shape, bound, generator))
                bias[:-1].copy_(_uniform(bias[:-1].shape, bound, generator))

    def sample_codes(self, n_samples, generator, training):
        device = self.noise_scale_raw.device
        eps = torch.randn(n_samples, self.noise_dim, generator=generator, device=device)
        hidden = eps * F.softplus(self.noise_scale_raw)
        keep = 1.0 - self.dropout
        for weight, bias in zip(self.hidden_weights, self.hidden_biases):
            hidden = torch.relu(torch.addmm(bias, hidden, weight))
            if training and self.dropout > 0:
                mask = torch.rand(hidden.shape, generator=generator, device=device)
                hidden = hidden * (mask < keep) * (1.0 / keep)
        return torch.cat([hidden, hidden.new_ones(n_samples, 1)], dim=1)


def forward_per_row(x, codes, weight_generator):
    """Main-network outputs with one weight sample per row of ``x``.

    Each row's input is contracted with the heads directly, so per-row
    weights are never materialised: for a layer,
    ``out[n] = (c[n] outer h[n]) @ W_heads + c[n] @ b_heads``.
    """
    hidden = x
    last = len(weight_generator.shapes) - 1
    for index, (weight, bias) in enumerate(
        zip(weight_generator.weight_heads, weight_generator.bias_heads)
    ):
        if codes is None:
            out = torch.addmm(bias[0], hidden, weight[0])
        else:
            code_size, fan_in, fan_out = weight.shape
            outer = (codes[:, :, None] * hidden[:, None, :]).reshape(-1, code_size * fan_in)
            out = torch.addmm(codes @ bias, outer, weight.reshape(-1, fan_out))
        hidden = out if index == last else torch.relu(out)
    return hidden


def forward_materialised(x, layers):
    """Reference main-network forward pass with explicit weights.

    ``layers`` holds ``(W, b)`` pairs, either shared (``W`` of shape (I, O))
    or one per row of ``x`` (``W`` of shape (n, I, O)).
    """
    hidden = x
    for index, (weight, bias) in enumerate(layers):
        if weight.dim() == 3:
            out = torch.bmm(hidden[:, None, :], weight)[:, 0, :] + bias
        else:
            out = hidden @ weight + bias
        hidden = out if index == len(layers) - 1 else torch.relu(out)
    return hidden


class StochasticMLP(nn.Module):
    """Main network with input noise and a weight generator.

    Parameters
    ----------
    weight_generator : WeightGenerator
        Source of the main network's weights.
    input_noise : float
        Initial scale of the Gaussian noise added to the inputs during
        training; the scale is learned through a softplus.  0 disables it.
    """

    def __init__(self, weight_generator, input_noise):
        super().__init__()
        self.weight_generator = weight_generator
        if input_noise > 0:
            self.input_noise_raw = nn.Parameter(
                torch.tensor(inverse_softplus(input_noise))
            )
        else:
            self.input_noise_raw = None

    @property
    def device(self):
        """Device holding the parameters."""
        return self.weight_generator.weight_heads[0].device

    @property
    def input_noise_scale(self):
        """Current input-noise scale (0.0 when disabled)."""
        if self.input_noise_raw is None:
            return 0.0
        return float(F.softplus(self.input_noise_raw.detach()))

    def forward(self, x, generator):
        """Training outputs: noisy input, one weight sample per row (eq. 3)."""
        if self.input_noise_raw is not None:
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            x = x + F.softplus(self.input_noise_raw) * noise
        codes = self.weight_generator.sample_codes(x.shape[0], generator, training=True)
        return forward_per_row(x, codes, self.weight_generator)

    @torch.no_grad()
    def predictive_mean(self, x, n_samples, seed, transform=None):
        """Average of ``transform(outputs)`` over weight samples (eq. 4).

        The samples are drawn from a generator seeded with ``seed``, so they are
        the same for every call and every row; the part that depends on ``x``
        runs in float64, so a row's result does not depend on the other rows.

        Parameters
        ----------
        x : torch.Tensor of shape (n, n_features), float64
        n_samples : int
            Number of weight samples S (ignored for point estimates).
        seed : int
        transform : callable, optional
            Applied to each sample's outputs before averaging.

        Returns
        -------
        torch.Tensor of shape (n, n_outputs), float64
        """
        generator_ = self.weight_generator
        device = self.device
        generator = torch.Generator(device=device).manual_seed(seed)
        codes = generator_.sample_codes(n_samples, generator, training=False)
        transform = transform or (lambda outputs: outputs)
        x = x.to(device=device, dtype=torch.float64)
        if codes is None:
            layers = [(w.double(), b.double()) for w, b in generator_.materialise(None)]
            return transform(forward_materialised(x, layers))

        widest = max(max(shape) for shape in generator_.shapes)
        sample_chunk = max(1, PREDICT_CHUNK_BYTES // (8 * generator_.n_main_parameters))
        row_chunk = max(1, PREDICT_CHUNK_BYTES // (8 * widest * min(sample_chunk, n_samples)))
        total = None
        for start in range(0, n_samples, sample_chunk):
            layers = [
                (w.double(), b.double()[:, None, :])
                for w, b in generator_.materialise(codes[start : start + sample_chunk])
            ]
            outputs = torch.cat(
                [
                    transform(_forward_samples(x[row : row + row_chunk], layers)).sum(0)
                    for row in range(0, x.shape[0], row_chunk)
                ]
            )
            total = outputs if total is None else total + outputs
        return total / n_samples


def _forward_samples(x, layers):
    """Outputs of every weight sample for every row: shape (S, n, n_outputs)."""
    hidden = x
    for index, (weight, bias) in enumerate(layers):
        out = torch.matmul(hidden, weight) + bias
        hidden = out if index == len(layers) - 1 else torch.relu(out)
    return hidden
