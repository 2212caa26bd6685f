"""Torch modules: weight generators and the main network they parametrise.

Every main-network layer ``l`` (fan-in ``I``, fan-out ``O``) is a linear
function of a per-row *code* ``c`` of size ``C``: its weights and bias,
stacked as an ``(I + 1, O)`` matrix (the bias is the last row), are::

    W~_l = sum_k c_k * heads[l][k]            # heads[l]: (C, I + 1, O)

For the hypernetwork the code is ``[z, 1]`` where ``z`` is the last hidden
layer of the hypernetwork MLP, so the heads are exactly the hypernetwork's
linear output layer of size P (all weights and biases of the main network),
split per main-network layer.  For the point-estimate baseline the code is
the constant ``[1]`` and the heads are the ordinary weights.

Keeping the output layer split this way lets training contract each row's
input with the heads directly, ``out = (c outer [h, 1]) @ heads``, without
ever materialising the per-row weight matrices (eq. 3 of the paper), while
prediction materialises one weight set per Monte Carlo sample (eq. 4).
"""

import math
import numbers
from typing import NamedTuple

import numpy as np
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


def with_ones(hidden):
    """``[hidden, 1]`` along the last dimension: the input of a bias row."""
    return torch.constant_pad_nd(hidden, (0, 1), 1.0)


def hypernetwork_codes(
    weight_noise,
    noise_scale_raw,
    hidden_weights,
    hidden_biases,
    negative_slope,
    masks=None,
    saved=None,
):
    """Codes ``[z, 1]`` of the hypernetwork's hidden layers: the one
    definition of its forward pass, for training and prediction.

    ``weight_noise`` is ``(n, noise_dim)`` with 2-D weights, or ``(R, n,
    noise_dim)`` with weights stacked over R replicas ``(R, in, out)`` and
    biases ``(R, 1, out)`` (the training engine's views).  ``masks``: the
    inverted-dropout masks per layer, or None.  ``saved``: None, or two lists
    that receive each layer's input and pre-activation (for a hand-written
    backward pass).
    """
    hidden = weight_noise * F.softplus(noise_scale_raw)
    product = torch.baddbmm if weight_noise.dim() == 3 else torch.addmm
    # In place where no autograd graph needs the activation's output.
    in_place = masks is not None and not torch.is_grad_enabled()
    for k, (weight, bias) in enumerate(zip(hidden_weights, hidden_biases)):
        pre = product(bias, hidden, weight)
        if saved is not None:
            saved[0].append(hidden)
            saved[1].append(pre)
        hidden = F.leaky_relu(pre, negative_slope) if negative_slope else torch.relu(pre)
        if masks is not None:
            hidden = hidden.mul_(masks[k]) if in_place else hidden * masks[k]
    return with_ones(hidden)


class TrainingNoise(NamedTuple):
    """All random draws of one training pass over some rows.

    Empty tensors stand for noise a model does not use.
    """

    input_noise: torch.Tensor  # (n, n_features): xi, scaled by the learned scale
    weight_noise: torch.Tensor  # (n, noise_dim): eps of the hypernetwork
    dropout_uniform: torch.Tensor  # (n, sum of hypernetwork hidden sizes)

    def rows(self, index):
        """The draws of the rows selected by ``index``."""
        return TrainingNoise(*(t[index] if t.numel() else t for t in self))


class WeightGenerator(nn.Module):
    """Main-network parameters as linear functions of a per-row code.

    Parameters
    ----------
    shapes : list of (int, int)
        ``(fan_in, fan_out)`` of each main-network layer.
    code_size : int
        Length ``C`` of the code vector; its last entry is the constant 1.
    """

    noise_dim = 0
    hidden_sizes = ()
    dropout = 0.0
    #: Trailing main-network outputs whose weights do not vary with the code.
    shared_outputs = 0
    #: Slope of the hypernetwork's hidden units below 0 (0: ReLU).
    negative_slope = 0.0

    def __init__(self, shapes, code_size):
        super().__init__()
        self.shapes = [tuple(shape) for shape in shapes]
        self.heads = nn.ParameterList(
            nn.Parameter(torch.empty(code_size, fan_in + 1, fan_out))
            for fan_in, fan_out in self.shapes
        )

    @property
    def code_size(self):
        return self.heads[0].shape[0]

    @property
    def is_distribution(self):
        """Whether the weights vary with noise (a hypernetwork), rather than
        being one point estimate."""
        return self.noise_dim > 0

    @property
    def n_main_parameters(self):
        """Number P of weights and biases of the main network."""
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in self.shapes)

    def _init_constant_code_heads(self, generator):
        # The head of the constant code entry is the mean main network: give it
        # the initialisation of torch.nn.Linear.
        for head, (fan_in, _) in zip(self.heads, self.shapes):
            with torch.no_grad():
                head[-1].copy_(_uniform(head.shape[1:], 1.0 / math.sqrt(fan_in), generator))

    def codes(self, weight_noise, dropout_uniform):
        """Return ``(n, C)`` codes for the given draws, or None for shared weights."""
        return None

    def dropout_masks(self, dropout_uniform):
        """Inverted-dropout masks per hidden layer, or None without dropout."""
        return None

    def frozen_masks(self):
        """``{parameter: mask}``, 0 where a parameter must stay at its value."""
        return {}

    def parameter_groups(self):
        """The trained parameters by role, for the training engine: the
        noise scale (None where there is none), the hypernetwork's hidden
        weights and biases, and the heads."""
        return {
            "noise_scale": None,
            "hidden_weights": [],
            "hidden_biases": [],
            "heads": list(self.heads),
        }

    def penalised_masks(self):
        """``{parameter: mask}``, 1 where the L2 penalty ``alpha`` applies: the
        heads' entries that produce main-network weights (not biases), for
        every code entry."""
        masks = {}
        for head in self.heads:
            mask = torch.ones_like(head)
            mask[:, -1, :] = 0.0
            masks[head] = mask
        return masks

    def materialise(self, codes, dtype=None):
        """Return the ``(n, I + 1, O)`` weight-and-bias matrix of every layer.

        With ``codes=None`` (point estimates) the matrices are ``(I + 1, O)``.
        ``dtype`` is the precision of the computation (default: the
        parameters').
        """
        heads = [head if dtype is None else head.to(dtype) for head in self.heads]
        if codes is None:
            return [head[0] for head in heads]
        codes = codes if dtype is None else codes.to(dtype)
        return [torch.tensordot(codes, head, dims=1) for head in heads]

    def flat_weights(self, codes):
        """Return the main-network parameter vectors, shape (n, P).

        Layer after layer, the ``(fan_in + 1) x fan_out`` matrix of weights
        with the bias as last row, row-major.
        """
        layers = self.materialise(codes)
        if codes is None:
            layers = [layer[None] for layer in layers]
        return torch.cat([layer.flatten(1) for layer in layers], dim=1)

    def diffusion_weights(self, weight_noise):
        """The ``(n, P)`` parameter vectors of one weight sample per row of
        ``weight_noise``, dropout off."""
        with torch.no_grad():
            return self.flat_weights(self.codes(weight_noise, weight_noise.new_empty(0)))

    def diffusion(self, weight_noise):
        """Spread of the generated weights (Figure 2 of the paper): the
        :func:`weight_spread` of :meth:`diffusion_weights`."""
        return weight_spread(self.diffusion_weights(weight_noise))


def weight_spread(weights):
    """From weight samples, rows of ``weights`` ``(n, P)``: the standard
    deviation of every one of the P parameters across samples; returns their
    mean and their standard deviation."""
    spread = weights.std(dim=0)
    return float(spread.mean()), float(spread.std())


class PointEstimate(WeightGenerator):
    """Ordinary point-estimate weights (the paper's "SGD" baseline)."""

    def __init__(self, shapes, generator):
        super().__init__(shapes, code_size=1)
        self._init_constant_code_heads(generator)


class HyperNetwork(WeightGenerator):
    """Hypernetwork ``g(eps; Theta)`` producing all main-network weights.

    ``eps ~ N(0, I)`` of size ``noise_dim`` is multiplied by a learned softplus
    scale (initially 1), passed through a ReLU (or leaky ReLU) MLP with
    dropout on its hidden units during training, and mapped linearly to the P
    main-network parameters.

    The linear output layer is initialised so that the part of the output
    independent of ``z`` (the output bias, the mean main network) has
    ``torch.nn.Linear``'s distribution, and the ``z``-dependent part spreads
    each weight across samples on the scale of nn.Linear's own spread,
    ``1 / sqrt(3 * fan_in)``: measured with the default hypernetwork
    (10 -> 100 -> 50), 0.67-0.71 times that without dropout (prediction)
    and 1.7-1.75 times with dropout 0.5 (training), for fan-ins 8 to 400.
    The hidden layers use He initialisation so that the spread does not
    shrink with depth.

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
    shared_outputs : int, default=0
        Number of trailing main-network outputs whose last-layer weights come
        from the constant code entry alone, so that they do not vary with
        ``eps`` (the log-variances of the Gaussian likelihood: drawn with the
        weights, single draws reached the clipping bound and their loss
        spikes dominated Adam's step sizes).
    negative_slope : float, default=0.0
        Slope of the hidden units for negative inputs: 0 is the paper's ReLU,
        a small positive value a leaky ReLU, whose units cannot all switch
        off for good.
    """

    def __init__(
        self,
        shapes,
        noise_dim,
        hidden_layer_sizes,
        dropout,
        generator,
        shared_outputs=0,
        negative_slope=0.0,
    ):
        sizes = [noise_dim, *hidden_layer_sizes]
        super().__init__(shapes, code_size=sizes[-1] + 1)
        self.noise_dim = noise_dim
        self.hidden_sizes = tuple(hidden_layer_sizes)
        self.dropout = dropout
        self.shared_outputs = shared_outputs
        self.negative_slope = float(negative_slope)
        self.noise_scale_raw = nn.Parameter(torch.tensor(inverse_softplus(1.0)))
        self.hidden_weights = nn.ParameterList(
            nn.Parameter(_uniform((n_in, n_out), math.sqrt(6.0 / n_in), generator))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.hidden_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n_out)) for n_out in sizes[1:]
        )
        self._init_constant_code_heads(generator)
        for head, (fan_in, _) in zip(self.heads, self.shapes):
            bound = 1.0 / math.sqrt(sizes[-1] * fan_in)
            with torch.no_grad():
                head[:-1].copy_(_uniform(head[:-1].shape, bound, generator))
        if shared_outputs:
            with torch.no_grad():
                self.heads[-1][:-1, :, -shared_outputs:] = 0.0

    def parameter_groups(self):
        return {
            "noise_scale": self.noise_scale_raw,
            "hidden_weights": list(self.hidden_weights),
            "hidden_biases": list(self.hidden_biases),
            "heads": list(self.heads),
        }

    def frozen_masks(self):
        """``{parameter: mask}``, 0 where a parameter must stay at its value."""
        if not self.shared_outputs:
            return {}
        mask = torch.ones_like(self.heads[-1])
        mask[:-1, :, -self.shared_outputs :] = 0.0
        return {self.heads[-1]: mask}

    def dropout_masks(self, dropout_uniform):
        """Inverted-dropout masks (0 or ``1 / keep``) per hidden layer, or None
        without dropout (rate 0, or no draws: prediction)."""
        if not dropout_uniform.numel() or self.dropout == 0:
            return None
        keep = 1.0 - self.dropout
        # In place on a copy: a fifth of the time of the comparison's bool tensor times a float.
        masks = dropout_uniform.clone().lt_(keep).mul_(1.0 / keep)
        return list(torch.split(masks, list(self.hidden_sizes), dim=-1))

    def codes(self, weight_noise, dropout_uniform):
        """Codes ``[z, 1]``; dropout applies when ``dropout_uniform`` is given."""
        return hypernetwork_codes(
            weight_noise,
            self.noise_scale_raw,
            self.hidden_weights,
            self.hidden_biases,
            self.negative_slope,
            self.dropout_masks(dropout_uniform),
        )


def expected_parameter_shapes(arrays):
    """``{name: shape}`` of the parameters of the architecture in ``arrays``
    (:meth:`StochasticMLP.to_arrays`), computed without building the module."""
    shapes = [tuple(shape) for shape in arrays["shapes"]]
    sizes_ok = all(
        len(shape) == 2 and all(isinstance(n, numbers.Integral) and n >= 1 for n in shape)
        for shape in shapes
    )
    if not shapes or not sizes_ok or any(a[1] != b[0] for a, b in zip(shapes[:-1], shapes[1:])):
        raise ValueError(f"The saved network's layer shapes {shapes} do not form a network.")
    prefix = "weight_generator."
    expected = {}
    if "input_noise_raw" in arrays["parameters"]:
        expected["input_noise_raw"] = ()
    if arrays["hypernetwork"]:
        sizes = [int(arrays["noise_dim"]), *(int(n) for n in arrays["hidden_sizes"])]
        expected[prefix + "noise_scale_raw"] = ()
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            expected[f"{prefix}hidden_weights.{index}"] = (n_in, n_out)
            expected[f"{prefix}hidden_biases.{index}"] = (n_out,)
        code_size = sizes[-1] + 1
    else:
        code_size = 1
    for index, (fan_in, fan_out) in enumerate(shapes):
        expected[f"{prefix}heads.{index}"] = (code_size, fan_in + 1, fan_out)
    return expected


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
            self.input_noise_raw = nn.Parameter(torch.tensor(inverse_softplus(input_noise)))
        else:
            self.input_noise_raw = None

    @property
    def device(self):
        """Device holding the parameters."""
        return self.weight_generator.heads[0].device

    def to_arrays(self):
        """The architecture and parameters as plain Python and numpy values.

        No torch object is left, so the result can be stored with pickle or
        skops.io and loaded on any device; :meth:`from_arrays` rebuilds the
        module.
        """
        generator_ = self.weight_generator
        return {
            "hypernetwork": generator_.is_distribution,
            "shapes": [list(shape) for shape in generator_.shapes],
            "noise_dim": generator_.noise_dim,
            "hidden_sizes": list(generator_.hidden_sizes),
            "dropout": float(generator_.dropout),
            "shared_outputs": int(generator_.shared_outputs),
            "negative_slope": float(generator_.negative_slope),
            "parameters": {
                name: tensor.detach().cpu().numpy().copy()
                for name, tensor in self.state_dict().items()
            },
        }

    @classmethod
    def from_arrays(cls, arrays):
        """Rebuild a module on the CPU from :meth:`to_arrays`.

        The stored parameters' shapes are checked against the stored
        architecture before anything is allocated, so a damaged or tampered
        file gives a ValueError instead of a huge allocation or a silently
        wrong model.
        """
        shapes = [tuple(shape) for shape in arrays["shapes"]]
        expected = expected_parameter_shapes(arrays)
        found = {name: np.shape(value) for name, value in arrays["parameters"].items()}
        if found != expected:
            raise ValueError(
                "The saved network is inconsistent: its parameters do not have the shapes its "
                f"architecture implies (expected {expected}, found {found})."
            )
        negative_slope = arrays.get("negative_slope", 0.0)
        if not (isinstance(negative_slope, numbers.Real) and 0 <= negative_slope < 1):
            raise ValueError(
                "The saved network is inconsistent: its hidden units' negative slope must be "
                f"a number in [0, 1), got {negative_slope!r}."
            )
        generator = torch.Generator()
        if arrays["hypernetwork"]:
            weights = HyperNetwork(
                shapes,
                arrays["noise_dim"],
                arrays["hidden_sizes"],
                arrays["dropout"],
                generator,
                shared_outputs=arrays.get("shared_outputs", 0),
                negative_slope=negative_slope,
            )
        else:
            weights = PointEstimate(shapes, generator)
        parameters = arrays["parameters"]
        model = cls(weights, input_noise=1.0 if "input_noise_raw" in parameters else 0.0)
        model.load_state_dict(
            {name: torch.from_numpy(np.array(value)) for name, value in parameters.items()}
        )
        return model

    def parameter_groups(self):
        """The trained parameters by role (see
        :meth:`WeightGenerator.parameter_groups`), with the raw input-noise
        scale (None where there is no input noise)."""
        return {"input_noise": self.input_noise_raw, **self.weight_generator.parameter_groups()}

    @property
    def input_noise_scale(self):
        """Current input-noise scale (0.0 when disabled)."""
        if self.input_noise_raw is None:
            return 0.0
        return float(F.softplus(self.input_noise_raw.detach()))

    def draw_noise(self, n_rows, n_features, generator):
        """Draw the training noise of ``n_rows`` rows from ``generator``."""
        generator_ = self.weight_generator
        device = self.device
        empty = torch.empty(0, device=device)

        def draw(sampler, width, active):
            if not active or width == 0:
                return empty
            return sampler((n_rows, width), generator=generator, device=device)

        return TrainingNoise(
            input_noise=draw(torch.randn, n_features, self.input_noise_raw is not None),
            weight_noise=draw(torch.randn, generator_.noise_dim, True),
            dropout_uniform=draw(torch.rand, sum(generator_.hidden_sizes), generator_.dropout),
        )

    def _sample_output_blocks(self, x, n_samples, seed):
        """Yield ``(samples, rows, outputs)`` blocks of the weight samples' outputs.

        ``outputs`` has shape ``(len(samples), len(rows), n_outputs)`` and at
        most about ``PREDICT_CHUNK_BYTES`` of float64 intermediates, whatever the
        number of rows.  The samples are drawn from a generator seeded with
        ``seed``; the part that depends on ``x`` runs in float64.  Point
        estimates have one sample.
        """
        generator_ = self.weight_generator
        x = x.to(device=self.device, dtype=torch.float64)
        widest = max(max(shape) for shape in generator_.shapes) + 1
        if not generator_.is_distribution:
            layers = [layer[None] for layer in generator_.materialise(None, torch.float64)]
            sample_chunk = n_samples = 1
        else:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            weight_noise = torch.randn(
                (n_samples, generator_.noise_dim), generator=generator, device=self.device
            )
            codes = generator_.codes(weight_noise, weight_noise.new_empty(0))
            sample_chunk = max(1, PREDICT_CHUNK_BYTES // (8 * generator_.n_main_parameters))
        row_chunk = max(1, PREDICT_CHUNK_BYTES // (8 * widest * min(sample_chunk, n_samples)))
        for start in range(0, n_samples, sample_chunk):
            samples = slice(start, min(start + sample_chunk, n_samples))
            if generator_.is_distribution:
                # In float64, so that the blocks' sizes cannot change the sums.
                layers = generator_.materialise(codes[samples], torch.float64)
            for row in range(0, x.shape[0], row_chunk):
                rows = slice(row, min(row + row_chunk, x.shape[0]))
                yield samples, rows, _forward_samples(x[rows], layers)

    @torch.no_grad()
    def predictive_mean(self, x, n_samples, seed, transform=None):
        """Average of ``transform(outputs)`` over weight samples (eq. 4).

        The samples are the same for every call and every row, and the part
        that depends on ``x`` runs in float64, so a row's result depends on the
        other rows only through float64 rounding (matrix-product kernels may
        sum in another order for another number of rows: relative differences
        of order 1e-16).  Memory stays bounded by evaluating blocks of samples
        and rows.

        Parameters
        ----------
        x : torch.Tensor of shape (n, n_features)
        n_samples : int
            Number of weight samples S (ignored for point estimates).
        seed : int
        transform : callable, optional
            Applied to each sample's outputs before averaging.

        Returns
        -------
        torch.Tensor of shape (n, n_transformed_outputs), float64
        """
        transform = transform or (lambda outputs: outputs)
        total, count = None, 0
        for samples, rows, outputs in self._sample_output_blocks(x, n_samples, seed):
            summed = transform(outputs).sum(0)
            if total is None:
                total = summed.new_zeros((x.shape[0], summed.shape[1]))
            total[rows] += summed
            count = max(count, samples.stop)
        return total / count

    @torch.no_grad()
    def sample_outputs(self, x, n_samples, seed):
        """Outputs of ``n_samples`` weight samples, shape (S, n, n_outputs), float64.

        Point estimates repeat their one output.
        """
        result = None
        for samples, rows, outputs in self._sample_output_blocks(x, n_samples, seed):
            if result is None:
                result = outputs.new_empty((n_samples, x.shape[0], outputs.shape[2]))
            result[samples, rows] = outputs
        return result[: samples.stop].expand(n_samples, -1, -1)


def _forward_samples(x, layers):
    """Outputs of every weight sample for every row: shape (S, n, n_outputs)."""
    hidden = x
    for index, layer in enumerate(layers):
        # In place: the same values without two more (S, n, width) buffers per layer.
        out = torch.matmul(hidden, layer[:, :-1, :])
        out += layer[:, -1:, :]
        hidden = out if index == len(layers) - 1 else out.relu_()
    return hidden
