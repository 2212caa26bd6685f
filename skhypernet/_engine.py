"""The training loop shared by every estimator.

The engine knows nothing about scikit-learn.  It trains a
:class:`~skhypernet._model.StochasticMLP` (hypernetwork or point-estimate
weights) with Adam on shuffled mini-batches and keeps the loss history and
the stopping rule of scikit-learn's MLP.

Speed comes from two choices, measured in ``docs/performance.md``:

- all parameters live in one flat buffer, their gradients in another, so one
  fused Adam call updates everything (:class:`FlatOptimizer`);
- the forward and backward passes are written out by hand
  (:func:`batch_gradients`): no autograd graph, per-row weights never
  materialised, gradients written straight into the flat buffer, and few
  enough operations per step that Python's dispatch stays a small part of a
  batch-1 step.

A loss is one entry of the loss table (:data:`LOSSES`): its value, its
gradient with respect to the network's outputs, and its output width.

The straightforward formulation, autograd through ``tests/reference.py`` and
``torch.optim.Adam``, lives with the tests, which check the engine against it.
"""

import contextlib
import copy
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from torch.optim.adam import adam as functional_adam

#: Rows whose noise is drawn at once; bounds the noise buffers' memory.
NOISE_CHUNK_ROWS = 16384
#: Below this many FLOPs per step, training runs on one thread: measured here,
#: a second thread slowed batch-1 epochs by 10-20 % and sped up 80 MFLOP steps
#: by 30 %.
SINGLE_THREAD_FLOPS = 10e6
#: ... and fewer parameters than this: Adam's update of 20 lockstep replicas of a
#: UCI hypernetwork (890,000 parameters) took 177 us on two threads, 300 on one; from
#: two replicas (89,000) on, two threads were faster.
SINGLE_THREAD_PARAMETERS = 80_000
#: Warnings point at the user's call: warn <- train, warn_not_converged or
#: warn_if_far_above <- the estimator's ``_fit`` <- ``fit`` or ``partial_fit``
#: <- the user's code.
USER_STACKLEVEL = 4


class Loss:
    """One entry of the loss table: what training minimises and prediction reads.

    Adding a loss means adding one subclass to :data:`LOSSES`.
    """

    name = None

    def n_outputs(self, n_targets):
        """Network outputs for ``n_targets`` targets (classes for cross-entropy)."""
        return n_targets

    def gradient(self, outputs, targets, row_weights):
        """Loss of one batch and its gradient.

        ``outputs`` has shape ``(..., n, n_outputs)`` (leading dimensions:
        replicas), ``row_weights`` ``(..., n, 1)``.  Returns the weighted loss
        summed over the n rows, per output (per target for the Gaussian
        likelihood, one entry for cross-entropy; the batch's loss is their
        mean over outputs divided by the rows), and the gradient of that
        batch loss with respect to ``outputs``.
        """
        raise NotImplementedError

    def kl_scale(self, last_output_losses):
        """Factor that puts the weight KL term on the scale of this loss as a
        negative log-likelihood per row (see :func:`kl_scale`)."""
        return 1.0


class SquaredError(Loss):
    name = "squared_error"

    def gradient(self, outputs, targets, row_weights):
        diff = outputs - targets
        weighted_diff = diff * row_weights
        loss_sums = (weighted_diff * diff).sum(-2)
        return loss_sums, weighted_diff.mul_(2.0 / (diff.shape[-2] * diff.shape[-1]))

    def kl_scale(self, last_output_losses):
        # The squared error of standardised targets is 2 sigma^2 times the
        # negative log-likelihood of Gaussian noise of variance sigma^2 (up to
        # a constant); sigma^2 is the last epoch's loss (1 before the first).
        if not last_output_losses:
            return 2.0
        return 2.0 * sum(last_output_losses) / len(last_output_losses)


class CrossEntropy(Loss):
    name = "cross_entropy"

    def gradient(self, outputs, targets, row_weights):
        log_proba = torch.log_softmax(outputs, -1)
        column = targets.unsqueeze(-1)
        loss_sums = -(log_proba.gather(-1, column) * row_weights).sum(-2)
        delta = torch.exp(log_proba)
        delta.scatter_add_(-1, column, -torch.ones_like(row_weights))
        return loss_sums, delta.mul_(row_weights / outputs.shape[-2])

    @staticmethod
    def transform(outputs):
        """Class probabilities of the logits."""
        return torch.softmax(outputs, dim=-1)


class GaussianNLL(Loss):
    """Negative log-likelihood of a Gaussian whose mean and log-variance the
    network outputs (the constant ``log(2 pi) / 2`` left out)."""

    name = "gaussian_nll"
    #: The log-variance outputs are clipped to ``[-bound, bound]``, in training
    #: (no gradient beyond) and prediction alike.
    log_variance_bound = 15.0

    def n_outputs(self, n_targets):
        return 2 * n_targets

    def split(self, outputs):
        """Means and clipped log-variances of the outputs."""
        n_targets = outputs.shape[-1] // 2
        log_variances = outputs[..., n_targets:]
        bound = self.log_variance_bound
        return outputs[..., :n_targets], log_variances.clamp(-bound, bound)

    def gradient(self, outputs, targets, row_weights):
        means, clipped = self.split(outputs)
        diff = means - targets
        precision = torch.exp(-clipped)
        scaled = diff.square().mul_(precision)
        weight_scale = row_weights / (diff.shape[-2] * diff.shape[-1])
        loss_sums = 0.5 * ((clipped + scaled) * row_weights).sum(-2)
        grad_log_variance = (1.0 - scaled).mul_(0.5 * weight_scale)
        # Clipping passes no gradient outside the bound.
        grad_log_variance.mul_(clipped == outputs[..., means.shape[-1] :])
        grad_means = diff.mul_(precision).mul_(weight_scale)
        return loss_sums, torch.cat([grad_means, grad_log_variance], -1)


SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL = SquaredError(), CrossEntropy(), GaussianNLL()
#: The loss table, by the estimators' names.
LOSSES = {loss.name: loss for loss in (SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL)}
#: Weight draws behind each estimate of the weight KL term (``kl_weight``).
KL_SAMPLES = 32
#: The KL term's gradient is estimated anew every this many steps and reused
#: in between: it changes little from one step to the next, and its estimate
#: costs more than a small batch's step (see :func:`kl_gradients`).
KL_REFRESH_STEPS = 16


class Parameters(NamedTuple):
    """A model's trained tensors by role (or the views of a flat buffer that
    stand for them, or their gradients).  None marks what a model lacks."""

    input_noise: torch.Tensor | None  # raw softplus scale of the input noise
    noise_scale: torch.Tensor | None  # raw softplus scale of the weight noise
    hidden_weights: list[torch.Tensor]  # hypernetwork hidden layers
    hidden_biases: list[torch.Tensor]
    heads: list[torch.Tensor]  # (C, I + 1, O) per main-network layer

    @classmethod
    def of(cls, model):
        return cls(**model.parameter_groups())

    def tensors(self):
        """The tensors, in a fixed order, without the Nones."""
        singles = [self.input_noise, self.noise_scale]
        return [t for t in singles if t is not None] + [
            *self.hidden_weights,
            *self.hidden_biases,
            *self.heads,
        ]

    def blocks_of(self, buffer, n_replicas):
        """The same structure made of consecutive blocks of ``buffer``, in the
        order of :meth:`tensors`, each holding the tensor of every replica:
        ``(R, *shape)``, with scalars as ``(R, 1, 1)`` and vectors as
        ``(R, 1, length)`` so that they broadcast over rows."""
        offset = 0

        def block(tensor):
            nonlocal offset
            if tensor is None:
                return None
            shape = {0: (1, 1), 1: (1, tensor.numel())}.get(tensor.dim(), tensor.shape)
            size = n_replicas * tensor.numel()
            part = buffer[offset : offset + size].view(n_replicas, *shape)
            offset += size
            return part

        return Parameters(
            block(self.input_noise),
            block(self.noise_scale),
            [block(t) for t in self.hidden_weights],
            [block(t) for t in self.hidden_biases],
            [block(t) for t in self.heads],
        )


def update_adam(flat, flat_grad, exp_avg, exp_avg_sq, step, adam_settings, fused):
    """torch's functional Adam on one tensor (``step`` is incremented).

    ``adam_settings`` is ``[learning rate, beta_1, beta_2, epsilon]``.
    """
    functional_adam(
        [flat],
        [flat_grad],
        [exp_avg],
        [exp_avg_sq],
        [],
        [step],
        fused=fused,
        amsgrad=False,
        beta1=adam_settings[1],
        beta2=adam_settings[2],
        lr=adam_settings[0],
        weight_decay=0.0,
        eps=adam_settings[3],
        maximize=False,
    )


_fused_adam = {}


def fused_adam_available(device_type):
    """Whether this torch has a fused Adam kernel for the device type (CPU: torch 2.4 on)."""
    if device_type not in _fused_adam:
        tensors = [torch.zeros(1, device=device_type) for _ in range(4)]
        try:
            update_adam(
                *tensors, torch.zeros((), device=device_type), [1e-3, 0.9, 0.999, 1e-8], True
            )
            _fused_adam[device_type] = True
        except RuntimeError:
            _fused_adam[device_type] = False
    return _fused_adam[device_type]


class Batch(NamedTuple):
    """The rows of one training step of every replica, ``(R, n, ...)``, and
    their noise draws (None: not used)."""

    x: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # (R, n, 1)
    input_noise: torch.Tensor | None
    weight_noise: torch.Tensor | None
    masks: list[torch.Tensor] | None  # inverted dropout, per hypernetwork layer


def contracts_inputs_first(n_rows, fan_in_with_bias, fan_out):
    """Whether a layer is cheaper as ``inputs @ head`` first (see batch_gradients)."""
    return n_rows * (fan_in_with_bias - fan_out) > 2 * fan_in_with_bias * fan_out


def with_ones(hidden):
    """``[hidden, 1]``: the input of a layer's bias row."""
    return torch.constant_pad_nd(hidden, (0, 1), 1.0)


class Layer(NamedTuple):
    """Views of one main-network layer's heads and their gradients, made once."""

    head: torch.Tensor  # (R, C, I + 1, O)
    grad_head: torch.Tensor
    matrix: torch.Tensor  # the heads as (R, C * (I + 1), O)
    matrix_t: torch.Tensor
    grad_matrix: torch.Tensor
    fan_in_with_bias: int
    fan_out: int
    # Point-estimate weights (a code of size 1): the weight rows and the bias row.
    weight: torch.Tensor
    weight_t: torch.Tensor
    bias: torch.Tensor
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor

    @classmethod
    def all(cls, values, grads):
        layers = []
        for head, grad_head in zip(values.heads, grads.heads):
            n_replicas, _, fan_in_with_bias, fan_out = head.shape
            matrix = head.view(n_replicas, -1, fan_out)
            grad_matrix = grad_head.view(n_replicas, -1, fan_out)
            layers.append(
                cls(
                    head,
                    grad_head,
                    matrix,
                    matrix.transpose(1, 2),
                    grad_matrix,
                    fan_in_with_bias,
                    fan_out,
                    matrix[:, :-1],
                    matrix[:, :-1].transpose(1, 2),
                    matrix[:, -1:],
                    grad_matrix[:, :-1],
                    grad_matrix[:, -1:],
                )
            )
        return layers


def sum_over_rows(left, right, out):
    """``out = left^T @ right`` per replica: ``(R, n, K)`` and ``(R, n, M)``
    give ``(R, K, M)``.  With one row it is an outer product, which a
    broadcast multiplication computes several times faster than ``bmm``."""
    if left.shape[1] == 1:
        return torch.mul(left.transpose(1, 2), right, out=out)
    return torch.bmm(left.transpose(1, 2), right, out=out)


def batch_gradients(values, grads, loss, batch, layers=None, negative_slope=0.0):
    """Gradient of the mean weighted loss of one batch of every replica, by hand.

    ``values`` and ``grads`` are :class:`Parameters` of ``(R, ...)`` blocks
    of the flat buffers; the gradients are written into ``grads``.
    ``layers`` are ``Layer.all(values, grads)``, made once for many steps.
    ``negative_slope`` is that of the hypernetwork's hidden units
    (:attr:`HyperNetwork.negative_slope`).
    Returns the weighted loss summed over rows, per replica and output
    (see :meth:`Loss.gradient`).  The forward pass is that of
    ``tests/reference.py``; every product is batched over the replicas.
    """
    if layers is None:
        layers = Layer.all(values, grads)
    x = batch.x
    n_replicas, n = x.shape[0], x.shape[1]
    flat_rows = n_replicas * n
    hyper = values.noise_scale is not None
    input_noise = values.input_noise

    # Forward pass, keeping what the backward pass needs.
    if input_noise is not None:
        x = torch.addcmul(x, batch.input_noise, F.softplus(input_noise))
    if hyper:
        hidden_inputs, hidden_pre = [], []
        codes = hypernet_forward(
            values, batch.weight_noise, batch.masks, hidden_inputs, hidden_pre, negative_slope
        )
        code_size = codes.shape[2]
        codes_column = codes.view(flat_rows, code_size, 1)
        codes_row = codes.view(flat_rows, 1, code_size)
    # A layer's output sum_{c,i} codes[c] inputs[i] head[c, i, o] is contracted
    # as (codes outer inputs) @ head, with an (n, C * (I + 1)) intermediate,
    # or, for layers that narrow enough to pay for reordering the head twice,
    # inputs @ head first, with an (n, C * O) intermediate.
    last = len(layers) - 1
    saved = []
    out = x
    for index, layer in enumerate(layers):
        fan_in_with_bias, fan_out = layer.fan_in_with_bias, layer.fan_out
        if not hyper:
            # Without codes the bias row needs no column of ones.
            inputs = out
            out = torch.baddbmm(layer.bias, inputs, layer.weight)
            intermediate = reordered = None
        elif contracts_inputs_first(n, fan_in_with_bias, fan_out):
            inputs = with_ones(out)
            reordered = layer.head.transpose(1, 2).reshape(n_replicas, fan_in_with_bias, -1)
            intermediate = torch.bmm(inputs, reordered).view(flat_rows, code_size, fan_out)
            out = torch.bmm(codes_row, intermediate).view(n_replicas, n, fan_out)
        else:
            inputs = with_ones(out)
            reordered = None
            intermediate = codes_column * inputs.view(flat_rows, 1, fan_in_with_bias)
            intermediate = intermediate.view(n_replicas, n, -1)
            out = torch.bmm(intermediate, layer.matrix)
        if index < last:
            out = torch.relu(out)
        saved.append((inputs, intermediate, reordered, out))

    loss_sums, delta = loss.gradient(out, batch.targets, batch.weights)

    # Backward pass through the main network.
    needs_input_gradient = hyper or input_noise is not None
    grad_codes = None
    for index in range(last, -1, -1):
        layer = layers[index]
        fan_in_with_bias, fan_out = layer.fan_in_with_bias, layer.fan_out
        inputs, intermediate, reordered, _ = saved[index]
        if not hyper:
            sum_over_rows(inputs, delta, layer.grad_weight)
            torch.sum(delta, 1, keepdim=True, out=layer.grad_bias)
            if index == 0 and not needs_input_gradient:
                break
            grad_x = torch.bmm(delta, layer.weight_t)
        else:
            if reordered is not None:
                grad_per_code = codes_column * delta.view(flat_rows, 1, fan_out)
                grad_per_code = grad_per_code.view(n_replicas, n, -1)
                grad_reordered = torch.bmm(inputs.transpose(1, 2), grad_per_code)
                layer.grad_head.copy_(
                    grad_reordered.view(
                        n_replicas, fan_in_with_bias, code_size, fan_out
                    ).transpose(1, 2)
                )
                if fan_out == 1:
                    # One product per code: the same values, several times faster than bmm.
                    layer_grad_codes = intermediate * delta.view(flat_rows, 1, 1)
                else:
                    layer_grad_codes = torch.bmm(intermediate, delta.view(flat_rows, fan_out, 1))
                grad_inputs = torch.bmm(grad_per_code, reordered.transpose(1, 2))
            else:
                sum_over_rows(intermediate, delta, layer.grad_matrix)
                grad_outer = torch.bmm(delta, layer.matrix_t)
                grad_outer = grad_outer.view(flat_rows, code_size, fan_in_with_bias)
                layer_grad_codes = torch.bmm(
                    grad_outer, inputs.view(flat_rows, fan_in_with_bias, 1)
                )
                grad_inputs = torch.bmm(codes_row, grad_outer).view(n_replicas, n, -1)
            grad_codes = (
                layer_grad_codes if grad_codes is None else grad_codes.add_(layer_grad_codes)
            )
            grad_x = grad_inputs[..., :-1]
        if index > 0:
            delta = torch.ops.aten.threshold_backward(grad_x, saved[index - 1][3], 0.0)
    if input_noise is not None:
        torch.sum(grad_x * batch.input_noise, (1, 2), keepdim=True, out=grads.input_noise)
        grads.input_noise.mul_(torch.sigmoid(input_noise))
    if hyper:
        hypernet_backward(
            values,
            grads,
            grad_codes.view(n_replicas, n, code_size),
            batch.weight_noise,
            hidden_inputs,
            hidden_pre,
            batch.masks,
            negative_slope,
        )
    return loss_sums


def hypernet_forward(values, weight_noise, masks, hidden_inputs, hidden_pre, negative_slope):
    """Codes ``[z, 1]`` of ``HyperNetwork.codes``, ``(R, n, C)``; ``masks``
    None for no dropout; hidden units with ``negative_slope`` (0: ReLU).

    Appends each layer's input and pre-activation to ``hidden_inputs`` and
    ``hidden_pre`` for :func:`hypernet_backward`.
    """
    hidden = weight_noise * F.softplus(values.noise_scale)
    for k, (weight, bias) in enumerate(zip(values.hidden_weights, values.hidden_biases)):
        hidden_inputs.append(hidden)
        pre = torch.baddbmm(bias, hidden, weight)
        hidden_pre.append(pre)
        hidden = F.leaky_relu(pre, negative_slope) if negative_slope else torch.relu(pre)
        if masks is not None:
            hidden = hidden.mul_(masks[k])
    return with_ones(hidden)


def hypernet_backward(
    values,
    grads,
    grad_codes,
    weight_noise,
    hidden_inputs,
    hidden_pre,
    masks,
    negative_slope,
    accumulate=None,
):
    """Back-propagate ``grad_codes`` through the hypernetwork's hidden layers.

    Without ``accumulate`` the gradients overwrite ``grads``; otherwise they
    are added, multiplied by ``accumulate`` (a weight per replica,
    ``(R, 1, 1)``: the regulariser's share).
    """
    grad_hidden = grad_codes[..., :-1]
    for k in range(len(hidden_pre) - 1, -1, -1):
        if masks is not None:
            grad_hidden = grad_hidden * masks[k]
        if negative_slope:
            grad_pre = torch.ops.aten.leaky_relu_backward(
                grad_hidden, hidden_pre[k], negative_slope, False
            )
        else:
            grad_pre = torch.ops.aten.threshold_backward(grad_hidden, hidden_pre[k], 0.0)
        if accumulate is None:
            sum_over_rows(hidden_inputs[k], grad_pre, grads.hidden_weights[k])
            torch.sum(grad_pre, 1, keepdim=True, out=grads.hidden_biases[k])
        else:
            scaled = grad_pre * accumulate
            grads.hidden_weights[k].baddbmm_(hidden_inputs[k].transpose(1, 2), scaled)
            grads.hidden_biases[k].add_(scaled.sum(1, keepdim=True))
        grad_hidden = torch.bmm(grad_pre, values.hidden_weights[k].transpose(1, 2))
    grad_scale = (grad_hidden * weight_noise).sum((1, 2), keepdim=True)
    grad_scale.mul_(torch.sigmoid(values.noise_scale))
    if accumulate is None:
        grads.noise_scale.copy_(grad_scale)
    else:
        grads.noise_scale.add_(grad_scale.mul_(accumulate))


def kl_gradients(values, grads, weight_noise, coefficients, fixed_outputs, negative_slope=0.0):
    """Add ``coefficients`` times the gradient of the weight KL estimate to ``grads``.

    The generated weights of the K draws of ``weight_noise`` (``(R, K,
    noise_dim)``, dropout off) give every main-network parameter p a sample
    mean m and variance v; the estimate is ``sum_p KL(N(m, v) || N(0, 1 /
    fan_in))``: the Gaussian prior minus the entropy of the Gaussian
    marginals.  Because every parameter is linear in the code, ``w = code @
    head``, m and v come from the mean code and the centred codes, so
    per-sample weights are never needed for the gradient of the codes.  The
    last ``fixed_outputs`` outputs of the last layer do not vary with the
    noise (``HyperNetwork.shared_outputs``): they are point estimates,
    outside the distribution.  ``coefficients`` has shape ``(R, 1, 1)``.
    Returns the estimate per replica, ``(R,)``.
    """
    hidden_inputs, hidden_pre = [], []
    codes = hypernet_forward(values, weight_noise, None, hidden_inputs, hidden_pre, negative_slope)
    n_replicas, n_draws, code_size = codes.shape
    mean_code = codes.mean(1, keepdim=True)
    # The mean code and the centred codes in one matrix: each head's means and
    # deviations, its gradient and the codes' gradient are one product each
    # (the step is bound by the number of operations, not by their size).
    stacked = torch.cat([mean_code, codes - mean_code], dim=1)
    # The regulariser's weight per replica goes into the codes, which are small,
    # instead of into a pass over the heads' gradient.
    scaled_stacked_t = stacked.transpose(1, 2) * coefficients
    grad_stacked = torch.zeros_like(stacked)
    total = codes.new_zeros(n_replicas)
    n_weights = 0
    heads = values.heads
    for index, (head, grad_head) in enumerate(zip(heads, grads.heads)):
        fan_in = float(head.shape[2] - 1)
        if index == len(heads) - 1 and fixed_outputs > 0:
            head = head[..., : head.shape[3] - fixed_outputs]
            grad_head = grad_head[..., : grad_head.shape[3] - fixed_outputs]
        flat_head = head.reshape(n_replicas, code_size, -1)
        n_weights += flat_head.shape[2]
        moments = torch.bmm(stacked, flat_head)
        mean, deviations = moments[:, :1], moments[:, 1:]
        # The floor keeps the logarithm finite for weights that do not vary.
        # A product: ``square`` goes through the slower ``pow`` kernel on CPU.
        variance = torch.mul(deviations, deviations).sum(1, keepdim=True)
        variance.mul_(1.0 / (n_draws - 1)).add_(1e-12)
        prior_ratio = variance * fan_in
        # fan_in * v - log(fan_in * v) + fan_in * m^2 per weight; the -1 of
        # each weight is subtracted once, after the loop.
        terms = prior_ratio.sub_(torch.log(prior_ratio)).addcmul_(mean, mean, value=fan_in)
        total.add_(terms.sum((1, 2)), alpha=0.5)
        # In place: the rows of ``moments`` become the gradients of the mean
        # and of the deviations.
        mean.mul_(fan_in)
        deviations.mul_(variance.reciprocal_().sub_(fan_in).mul_(-1.0 / (n_draws - 1)))
        # Accumulated straight into the heads' gradient where it is one block
        # (not the last layer's when it has outputs outside the distribution):
        # no head-sized temporaries, whose passes over memory cost 12-20 % of
        # the step in lockstep.
        if grad_head.is_contiguous():
            grad_head.view(n_replicas, code_size, -1).baddbmm_(scaled_stacked_t, moments)
        else:
            grad_head.add_(torch.bmm(scaled_stacked_t, moments).view(grad_head.shape))
        grad_stacked.baddbmm_(moments, flat_head.transpose(1, 2))
    # The centred codes' gradient has zero column means already (so does
    # ``deviations``): no correction for the centring is needed.  The mean
    # code's gradient reaches every draw's code in equal parts.
    grad_codes = grad_stacked[:, 1:].add_(grad_stacked[:, :1], alpha=1.0 / n_draws)
    total.sub_(0.5 * n_weights)
    hypernet_backward(
        values,
        grads,
        grad_codes,
        weight_noise,
        hidden_inputs,
        hidden_pre,
        None,
        negative_slope,
        coefficients,
    )
    return total


class FlatOptimizer:
    """Adam over one flat buffer holding all parameters of R models of one shape.

    On creation the models' parameters are copied into the buffer and made
    views of it, so the models and the optimiser share memory.  Every
    parameter is one block holding the R models' tensors side by side;
    :attr:`values` and :attr:`grads` are :class:`Parameters` of those
    ``(R, ...)`` blocks of the parameter and gradient buffers.  Adding an
    optimiser option touches this class alone.

    Parameters
    ----------
    models : list of StochasticMLP
        Models of one architecture (the replicas trained in lockstep).
    learning_rate : float
    states : list of dict or None, optional
        Adam's state of each replica to resume from, laid out as
        :meth:`replica_state` gives it (None, or a None entry: fresh moments).
        The step count is shared: the first given replica's is taken.
    beta_1, beta_2, epsilon : float
        Adam's decay rates of the moment estimates and its numerical floor.
    alpha : float
        L2 penalty of the parameters the weight generator names in
        ``penalised_masks`` (the main network's weights, not its biases).
    """

    def __init__(
        self,
        models,
        learning_rate,
        states=None,
        *,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=0.0,
    ):
        self.learning_rate = learning_rate
        self.adam_settings = [float(learning_rate), float(beta_1), float(beta_2), float(epsilon)]
        self.n_replicas = len(models)
        structure = Parameters.of(models[0])
        per_model = [Parameters.of(model).tensors() for model in models]
        if any(
            [t.shape for t in tensors] != [t.shape for t in per_model[0]] for tensors in per_model
        ):
            raise ValueError("Models trained in lockstep must have one architecture.")
        first = per_model[0][0]
        size = self.n_replicas * sum(t.numel() for t in per_model[0])
        self.flat = torch.empty(size, device=first.device, dtype=first.dtype)
        self.flat_grad = torch.zeros_like(self.flat)
        #: The first model's tensors: the layout of every buffer like :attr:`flat`.
        self.structure = structure
        self.values = structure.blocks_of(self.flat, self.n_replicas)
        self.grads = structure.blocks_of(self.flat_grad, self.n_replicas)
        #: The KL term's latest gradient estimate, added to every step's
        #: gradient until the next (see ``KL_REFRESH_STEPS``); made on first use.
        self.flat_kl_grad = self.kl_grads = None
        for replica, tensors in enumerate(per_model):
            for parameter, block in zip(tensors, self.values.tensors()):
                view = block[replica].view(parameter.shape)
                view.copy_(parameter.detach())
                parameter.data = view
        generator = models[0].weight_generator
        frozen = generator.frozen_masks()
        penalised = generator.penalised_masks() if alpha > 0 else {}
        #: 0 where a gradient is dropped before each update; None when none is.
        self.trainable = self._masks(frozen, 1.0) if frozen else None
        #: ``alpha`` where the L2 penalty applies, else 0; None without a penalty.
        self.penalty = self._masks(penalised, 0.0, alpha) if penalised else None
        self.fused = fused_adam_available(first.device.type)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = torch.zeros((), device=first.device, dtype=first.dtype)
        given = [(r, state) for r, state in enumerate(states or ()) if state is not None]
        for replica, state in given:
            for name, moment in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                saved = state[name].to(first.device)
                offset = 0
                for block in self.blocks(moment):
                    size = block[replica].numel()
                    block[replica].copy_(saved[offset : offset + size].view_as(block[replica]))
                    offset += size
        if given:
            self.step_count.copy_(given[0][1]["step"])

    def kl_gradient_buffers(self):
        """The buffer of the KL term's gradient estimate, flat and as
        :class:`Parameters` blocks, made on the first call."""
        if self.flat_kl_grad is None:
            self.flat_kl_grad = torch.zeros_like(self.flat)
            self.kl_grads = self.structure.blocks_of(self.flat_kl_grad, self.n_replicas)
        return self.flat_kl_grad, self.kl_grads

    def _masks(self, masks, default, scale=1.0):
        """A buffer like :attr:`flat`: ``scale * masks[parameter]`` on the
        blocks of the parameters in ``masks`` (of the first model), else ``default``."""
        buffer = torch.full_like(self.flat, default)
        for parameter, block in zip(self.structure.tensors(), self.blocks(buffer)):
            if parameter in masks:
                block.copy_(scale * masks[parameter].reshape(block.shape[1:]))
        return buffer

    def step(self, n_rows):
        """Update the parameters from the gradients of batches of ``n_rows`` rows."""
        if self.penalty is not None:
            # The L2 penalty of scikit-learn's MLP: alpha / 2 * ||w||^2 per batch rows.
            self.flat_grad.addcmul_(self.penalty, self.flat, value=1.0 / n_rows)
        if self.trainable is not None:
            self.flat_grad.mul_(self.trainable)
        update_adam(
            self.flat,
            self.flat_grad,
            self.exp_avg,
            self.exp_avg_sq,
            self.step_count,
            self.adam_settings,
            self.fused,
        )

    def flush_denormals(self):
        """Set Adam's moments below the smallest normal float to zero.

        :func:`flushed_denormals` does that on the calling thread only; the
        part of the update that torch's other threads compute keeps its
        denormals, which appear wherever a gradient stays zero (dead units:
        most of a collapsed hypernetwork's heads) and make its arithmetic
        many times slower.  Zero moments stay zero while the gradient does.
        """
        tiny = torch.finfo(self.flat.dtype).tiny
        for moment in (self.exp_avg, self.exp_avg_sq):
            moment.masked_fill_(moment.abs() < tiny, 0.0)

    def finite_replicas(self):
        """Whether each replica's parameters are all finite: list of bool."""
        finite = torch.ones(self.n_replicas, dtype=torch.bool, device=self.flat.device)
        for block in self.values.tensors():
            finite &= torch.isfinite(block).flatten(1).all(1)
        return finite.tolist()

    def snapshot(self):
        """A copy of the parameters, for :meth:`restore`."""
        return self.flat.clone()

    def restore(self, snapshot, reset_moments, replica=None):
        """Put back the parameters of ``snapshot``; optionally restart Adam.

        With ``replica``, only that replica's parameters (and moments).  The
        step count is shared: it restarts only when every replica does.
        """
        if replica is None:
            self.flat.copy_(snapshot)
            if reset_moments:
                self.exp_avg.zero_()
                self.exp_avg_sq.zero_()
                self.step_count.zero_()
            return
        for target, source in zip(self.values.tensors(), self.blocks(snapshot)):
            target[replica].copy_(source[replica])
        if reset_moments:
            for buffer in (self.exp_avg, self.exp_avg_sq):
                for block in self.blocks(buffer):
                    block[replica].zero_()

    def blocks(self, buffer):
        """The ``(R, ...)`` blocks of a buffer laid out like :attr:`flat`."""
        return self.structure.blocks_of(buffer, self.n_replicas).tensors()

    def replica_state(self, replica):
        """Adam's state of one replica, laid out as a one-model optimiser's
        :meth:`state_dict`."""
        state = {
            name: torch.cat([block[replica].flatten() for block in self.blocks(moment)])
            for name, moment in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq))
        }
        return {**state, "step": self.step_count.clone()}


def step_flops(model, batch_size):
    """Floating-point operations of one training step (forward and backward).

    Each multiply-add of the forward pass is matched by two in the backward
    pass (gradients of the parameters and of the inputs): 3 x 2 FLOPs.
    """
    generator = model.weight_generator
    sizes = [generator.noise_dim, *generator.hidden_sizes]
    hidden = sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return 6 * batch_size * (generator.code_size * generator.n_main_parameters + hidden)


@contextlib.contextmanager
def threads_for(flops_per_step, n_parameters=0):
    """Use one thread inside the block for small steps, then restore the count."""
    previous = torch.get_num_threads()
    small = flops_per_step < SINGLE_THREAD_FLOPS and n_parameters < SINGLE_THREAD_PARAMETERS
    single = small and previous > 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def interrupts_collected():
    """Record Ctrl-C inside the block instead of raising it where it lands.

    Yields a list that receives one entry per Ctrl-C, for the block to check
    where stopping is safe: between chunks of steps, never between a step's
    gradient and its update or inside torch code.  Outside the
    main thread, or where SIGINT is not Python's default handler, nothing
    changes and the list stays empty.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield []
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C until the block has finished, then warn that it came.

    The block is short bookkeeping that must run whole.
    """
    with interrupts_collected() as received:
        yield
    if received:
        warnings.warn(
            "Interrupted by user after training: the fitted model is complete.",
            stacklevel=USER_STACKLEVEL,
        )


@contextlib.contextmanager
def flushed_denormals():
    """Flush denormal floats to zero inside the block, then restore the mode.

    Adam's running averages decay into denormals where ReLU or dropout make
    gradients exactly zero, and denormal arithmetic is many times slower.
    """
    probe = torch.tensor([1e-39], dtype=torch.float32)
    previous = bool((probe * 1.0).item() == 0.0)
    changed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(previous)


@dataclass
class TrainingHistory:
    """Per-epoch record of a training run, and the state of its stopping rule."""

    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = float("inf")
    best_validation_score: float = -float("inf")
    no_improvement_count: int = 0
    n_iter: int = 0
    n_samples_seen: int = 0
    best_state: dict = None
    #: Adam steps taken since the parameters were initialised.
    n_steps: int = 0
    #: Mean weighted loss of the last epoch per output (data term only).
    last_output_losses: list = field(default_factory=list)
    #: Fixed weight noise of the diffusion diagnostic; None to skip it.
    diffusion_noise: torch.Tensor = None
    #: ``(mean, std)`` of the weight spread at initialisation, then per epoch.
    initial_diffusion: tuple = None
    weight_diffusion: list = field(default_factory=list)
    #: Adam steps taken at the end of each epoch of ``weight_diffusion``.
    diffusion_steps: list = field(default_factory=list)

    def collapse_step(self, fraction=0.01):
        """Adam step at the end of the first epoch whose mean weight spread fell
        below ``fraction`` of the initial one; None if it has not."""
        if self.initial_diffusion is None:
            return None
        threshold = fraction * self.initial_diffusion[0]
        for (spread, _), step in zip(self.weight_diffusion, self.diffusion_steps):
            if spread < threshold:
                return step
        return None

    def record(self, loss, validation_score, tol, model):
        """Append one epoch and update the no-improvement counter.

        With a validation score, improvement is judged on it (higher is
        better) and the best parameters are kept; otherwise on the training
        loss.  Mirrors ``MLPRegressor._update_no_improvement_count``.
        """
        self.loss_curve.append(loss)
        self.n_iter += 1
        if validation_score is not None:
            self.validation_scores.append(validation_score)
            improved = validation_score >= self.best_validation_score + tol
            if validation_score > self.best_validation_score:
                self.best_validation_score = validation_score
                self.best_state = copy.deepcopy(model.state_dict())
        else:
            improved = loss <= self.best_loss - tol
            self.best_loss = min(self.best_loss, loss)
        self.no_improvement_count = 0 if improved else self.no_improvement_count + 1


@dataclass
class TrainingData:
    """Tensors of the training sets of R replicas (one each, of equal size),
    already on the training device: ``(R, n_rows, ...)``."""

    X: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # normalised to mean 1 over each replica's rows
    loss: Loss

    @property
    def n_samples(self):
        """Rows per replica."""
        return self.X.shape[1]

    @classmethod
    def single(cls, X, targets, weights, loss):
        """The training set of one model."""
        return cls(X[None], targets[None], weights[None], loss)


def run_epoch(
    models, optimizer, data, batch_size, shuffle, generators, kl_weights=None, interrupted=()
):
    """One pass over every replica's rows in mini-batches, the replicas in lockstep.

    Replica r draws its batch order and noise from ``generators[r]`` in the
    order a single model would, so it follows the same path as a model
    trained alone.  ``kl_weights[r]`` (default 0) multiplies replica r's
    weight KL estimate divided by the number of rows, so that over an epoch
    the steps add up to the KL term of a variational objective; the estimate
    is made every ``KL_REFRESH_STEPS`` steps and its gradient reused between.  A non-empty
    ``interrupted`` (see :func:`interrupts_collected`) raises
    KeyboardInterrupt after the step in progress.

    Returns
    -------
    output_losses : torch.Tensor of shape (R, n_outputs)
        Mean weighted loss per replica and output (the data term).
    kl : list of float
        Mean of each replica's KL estimates (0 without ``kl_weights``).
    n_steps : int
    """
    n_replicas, n_samples = data.X.shape[0], data.n_samples
    device = data.X.device
    weight_generator = models[0].weight_generator
    orders = torch.stack(
        [
            torch.randperm(n_samples, generator=generator, device=device)
            if shuffle
            else torch.arange(n_samples, device=device)
            for generator in generators
        ]
    )
    with_kl = weight_generator.noise_dim > 0 and any(kl_weights or ())
    if with_kl:
        kl_coefficients = torch.tensor(kl_weights, dtype=data.X.dtype, device=device)
        kl_coefficients = kl_coefficients.view(-1, 1, 1) / n_samples
        flat_kl_grad, kl_grads = optimizer.kl_gradient_buffers()
    replicas = torch.arange(n_replicas, device=device).unsqueeze(1)
    # Noise is drawn for whole chunks of batches at once: fewer, larger draws.
    chunk = max(batch_size, NOISE_CHUNK_ROWS // batch_size * batch_size)
    chunk_sums, kl_sums = [], []
    layers = Layer.all(optimizer.values, optimizer.grads)
    values, grads, loss = optimizer.values, optimizer.grads, data.loss
    shared_outputs = weight_generator.shared_outputs
    slope = weight_generator.negative_slope
    for start in range(0, n_samples, chunk):
        rows = orders[:, start : start + chunk]
        draws = [
            model.draw_noise(rows.shape[1], data.X.shape[2], generator)
            for model, generator in zip(models, generators)
        ]
        noise = [stack_replicas(kind) if kind[0].numel() else None for kind in zip(*draws)]
        n_steps = -(-rows.shape[1] // batch_size)
        first_step = start // batch_size
        if with_kl:
            refreshes = refresh_steps(first_step, n_steps)
            kl_noise = torch.stack(
                [
                    torch.randn(
                        (len(refreshes), KL_SAMPLES, weight_generator.noise_dim),
                        generator=generator,
                        device=device,
                    )
                    for generator in generators
                ],
                dim=1,
            )

        masks = None if noise[2] is None else weight_generator.dropout_masks(noise[2])
        # Every tensor is cut into the steps' batches at once: views, no copies.
        columns = [
            step_batches(tensor, batch_size, n_steps)
            for tensor in (
                data.X[replicas, rows],
                data.targets[replicas, rows],
                data.weights[replicas, rows].unsqueeze(-1),
                noise[0],
                noise[1],
            )
        ]
        columns.append(
            zip(*(step_batches(mask, batch_size, n_steps) for mask in masks))
            if masks
            else [None] * n_steps
        )
        step_sums, step_kl = [], []
        for step, tensors in enumerate(zip(*columns)):
            batch = Batch(*tensors)
            step_sums.append(batch_gradients(values, grads, loss, batch, layers, slope))
            if with_kl:
                if step in refreshes:
                    flat_kl_grad.zero_()
                    kl_noise_draws = kl_noise[refreshes[step]]
                    step_kl.append(
                        kl_gradients(
                            values,
                            kl_grads,
                            kl_noise_draws,
                            kl_coefficients,
                            shared_outputs,
                            slope,
                        )
                    )
                optimizer.flat_grad.add_(flat_kl_grad)
            optimizer.step(batch.x.shape[1])
            # Between steps, never inside one: a chunk is seconds of batch-1 steps.
            if interrupted:
                raise KeyboardInterrupt
        chunk_sums.append(torch.stack(step_sums).sum(0))
        if with_kl:
            kl_sums.append(torch.stack(step_kl).sum(0))
    n_steps = -(-n_samples // batch_size)
    output_losses = torch.stack(chunk_sums).sum(0).cpu().double() / n_samples
    n_refreshes = len(refresh_steps(0, n_steps))
    kl = (torch.stack(kl_sums).sum(0) / n_refreshes).tolist() if with_kl else [0.0] * n_replicas
    return output_losses, kl, n_steps


def refresh_steps(first_step, n_steps):
    """``{step: k}`` for the steps ``first_step + step`` of an epoch, ``step <
    n_steps``, that estimate the KL term's gradient anew (every
    ``KL_REFRESH_STEPS``-th step of the epoch, from its first), k counting them."""
    offset = -first_step % KL_REFRESH_STEPS
    return {step: k for k, step in enumerate(range(offset, n_steps, KL_REFRESH_STEPS))}


def stack_replicas(tensors):
    """The replicas' tensors stacked on a new first dimension; a view for one."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def step_batches(tensor, batch_size, n_steps):
    """``tensor`` (R, rows, ...) cut into the views of ``n_steps`` batches;
    Nones for a tensor that is None."""
    return [None] * n_steps if tensor is None else tensor.split(batch_size, dim=1)


def kl_scale(loss, history):
    """Factor that puts the KL term on the scale of the loss as a likelihood.

    Cross-entropy and the Gaussian likelihood are negative log-likelihoods
    per row, so a variational objective adds ``KL / n_rows``: the factor is 1.
    For the squared error, :meth:`SquaredError.kl_scale`.
    """
    return loss.kl_scale(history.last_output_losses)


def train(
    models,
    optimizer,
    data,
    histories,
    *,
    max_epochs,
    batch_size,
    shuffle,
    tol,
    n_iter_no_change,
    generators,
    validation_scores=None,
    verbose=0,
    kl_weight=0.0,
    on_epoch_end=None,
    stacklevel=USER_STACKLEVEL,
):
    """Run up to ``max_epochs`` epochs, stopping as scikit-learn's MLP does.

    Trains R models of one architecture in lockstep (an estimator's fit is
    R = 1): each keeps its own history, stopping rule and randomness, and
    ends with the parameters it would have had trained alone, up to the
    rounding of batched products.

    Parameters
    ----------
    models : list of StochasticMLP
        Trained in place.
    optimizer : FlatOptimizer
        Over ``models``.
    data : TrainingData
    histories : list of TrainingHistory
        Updated in place, one per model.
    max_epochs : int
        Epochs to run at most; 1 for ``partial_fit``.
    batch_size : int
    shuffle : bool
    tol : float
    n_iter_no_change : int or inf
        A model stops when its loss (or validation score) has not improved
        by ``tol`` for more than this many consecutive epochs.
    generators : list of torch.Generator
        Each model's source of all randomness: batch order, weight and input
        noise, dropout.
    validation_scores : list of callable or None, optional
        Called after every epoch; each returns its model's score to
        maximise.  A model with one gets the parameters of its best score
        back at the end.
    verbose : int
    kl_weight : float
        Weight of the KL term of the weight distribution, relative to a
        variational objective (see :func:`kl_scale`); the recorded loss
        includes the term.
    on_epoch_end : callable, optional
        Called after every epoch with the indices of the models that
        recorded it (those still training), for diagnostics over all models.
    stacklevel : int
        Stack level of the warnings issued here, counted from this function:
        where the caller's caller sits that should see them.

    Returns
    -------
    stopped : list of bool
        Whether each model's stopping rule ended its training before
        ``max_epochs``.
    """
    n_replicas = len(models)
    validation_scores = validation_scores or [None] * n_replicas
    start_time = time.perf_counter()
    stopped = [False] * n_replicas
    # The parameters of models that stopped while others went on.
    final_states = [None] * n_replicas
    snapshot = None
    try:
        work = n_replicas * step_flops(models[0], batch_size)
        with (
            flushed_denormals(),
            threads_for(work, optimizer.flat.numel()),
            torch.no_grad(),
            interrupts_collected() as interrupted,
        ):
            for epoch in range(max_epochs):
                if interrupted:
                    raise KeyboardInterrupt
                # The last finished epoch's parameters, kept for divergence and Ctrl-C.
                snapshot = optimizer.snapshot()
                epoch_kl_weights = [kl_weight * kl_scale(data.loss, h) for h in histories]
                output_losses, kls, n_steps = run_epoch(
                    models,
                    optimizer,
                    data,
                    batch_size,
                    shuffle,
                    generators,
                    epoch_kl_weights,
                    interrupted,
                )
                optimizer.flush_denormals()
                # A last update can make parameters NaN while the epoch's loss
                # was finite: that epoch diverged too.
                finite = optimizer.finite_replicas()
                losses, scores, messages, recorded = [], [], [], []
                for replica, (model, history) in enumerate(zip(models, histories)):
                    if stopped[replica]:
                        continue
                    loss = float(output_losses[replica].mean())
                    loss += epoch_kl_weights[replica] * kls[replica] / data.n_samples
                    if not (math.isfinite(loss) and finite[replica]):
                        optimizer.restore(
                            snapshot,
                            reset_moments=True,
                            replica=replica if n_replicas > 1 else None,
                        )
                        warn_diverged(history.n_iter + 1, loss, stacklevel + 1)
                        stopped[replica] = True
                        continue
                    validation_score = validation_scores[replica]
                    score = validation_score() if validation_score is not None else None
                    history.n_samples_seen += data.n_samples
                    history.n_steps += n_steps
                    history.last_output_losses = output_losses[replica].tolist()
                    history.record(loss, score, tol, model)
                    if history.diffusion_noise is not None:
                        history.weight_diffusion.append(
                            model.weight_generator.diffusion(history.diffusion_noise)
                        )
                        history.diffusion_steps.append(history.n_steps)
                    losses.append(loss)
                    recorded.append(replica)
                    if score is not None:
                        scores.append(score)
                    if history.no_improvement_count > n_iter_no_change:
                        stopped[replica] = True
                        measure = "Validation score" if score is not None else "Training loss"
                        messages.append(
                            f"{measure} did not improve more than tol={tol:f} for "
                            f"{n_iter_no_change} consecutive epochs. Stopping."
                        )
                snapshot = None  # the epoch is finished: nothing to roll back
                if on_epoch_end is not None and recorded:
                    on_epoch_end(recorded)
                if verbose and losses:
                    report_epoch(
                        verbose,
                        epoch,
                        max_epochs,
                        histories[0].n_iter,
                        sum(losses) / len(losses),
                        sum(scores) / len(scores) if scores else None,
                        time.perf_counter() - start_time,
                    )
                if messages and verbose > 1:
                    sys.stderr.write("\n")
                if verbose:
                    for message in messages:
                        print(message)
                if all(stopped):
                    break
                for replica, model in enumerate(models):
                    if stopped[replica] and final_states[replica] is None:
                        final_states[replica] = copy.deepcopy(model.state_dict())
            if interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if snapshot is not None:
            with torch.no_grad():
                optimizer.restore(snapshot, reset_moments=False)
        warnings.warn(
            "Training interrupted by user: the model keeps the parameters of the last "
            f"finished epoch ({histories[0].n_iter} in all).",
            stacklevel=stacklevel,
        )
        stopped = [True] * n_replicas
    for model, history, validation_score, state in zip(
        models, histories, validation_scores, final_states
    ):
        if validation_score is not None and history.best_state is not None:
            model.load_state_dict(history.best_state)
        elif state is not None:
            model.load_state_dict(state)
    return stopped


def warn_diverged(epoch, loss, stacklevel):
    if math.isfinite(loss):
        became = "some parameters stopped being finite"
    else:
        became = f"the loss became {loss}"
    warnings.warn(
        f"Training diverged in epoch {epoch}: {became}. The parameters "
        "from before that epoch are kept and the optimiser's state is reset. Lower "
        "learning_rate_init, or scale X and y (for example with StandardScaler).",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )


def report_epoch(verbose, epoch, max_epochs, n_iter, loss, score, elapsed):
    """Progress of training: a line per epoch (verbose=1) or a live bar (verbose>=2)."""
    message = f"Epoch {n_iter}, loss = {loss:.8f}"
    if score is not None:
        message += f", validation score = {score:.6f}"
    if verbose == 1:
        print(f"{message}, elapsed = {elapsed:.2f}s")
        return
    done = epoch + 1
    remaining = elapsed / done * (max_epochs - done)
    width = 30
    filled = int(width * done / max_epochs)
    bar = "#" * filled + "." * (width - filled)
    end = "\n" if done == max_epochs else ""
    sys.stderr.write(f"\r[{bar}] {done}/{max_epochs} {message}, ETA {remaining:.0f}s{end}")
    sys.stderr.flush()


#: A last epoch's loss this many times that of a model ignoring X is a failed fit.
FAILED_FIT_FACTOR = 10.0


def warn_if_far_above(output_losses, reference, stacklevel=USER_STACKLEVEL):
    """Warn when the last epoch's mean loss is far above ``reference``.

    Training can run away without any loss becoming inf or NaN (a huge
    learning rate); its predictions are then finite but meaningless.
    """
    if not output_losses:
        return
    loss = sum(output_losses) / len(output_losses)
    if loss > FAILED_FIT_FACTOR * max(reference, 1e-12):
        warnings.warn(
            f"The last epoch's training loss, {loss:.3g}, is more than "
            f"{FAILED_FIT_FACTOR:g} times that of a model that ignores X ({reference:.3g}): "
            "training has not found a useful fit and its predictions are not to be trusted. "
            "Lower learning_rate_init, or scale X and y (for example with StandardScaler).",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )


def warn_not_converged(max_epochs, stacklevel=USER_STACKLEVEL):
    warnings.warn(
        f"Stochastic optimizer: maximum iterations ({max_epochs}) reached and the "
        "optimization hasn't converged yet.",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )
