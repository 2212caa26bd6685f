"""The forward and backward passes of one training step, written out by hand."""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._model import hypernetwork_codes, with_ones


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


class CodeViews(NamedTuple):
    """A batch's codes ``(R, n, C)`` viewed for the per-row products."""

    column: torch.Tensor  # (R * n, C, 1)
    row: torch.Tensor  # (R * n, 1, C)
    size: int

    @classmethod
    def of(cls, codes):
        n_replicas, n, size = codes.shape
        return cls(codes.view(n_replicas * n, size, 1), codes.view(n_replicas * n, 1, size), size)


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
    x, input_noise = batch.x, values.input_noise
    if input_noise is not None:
        x = torch.addcmul(x, batch.input_noise, F.softplus(input_noise))
    codes = None
    if values.has_codes:
        hidden_inputs, hidden_pre = [], []
        codes = CodeViews.of(
            hypernet_forward(
                values, batch.weight_noise, batch.masks, hidden_inputs, hidden_pre, negative_slope
            )
        )
    saved = []
    for index, layer in enumerate(layers):
        inputs = x if not saved else saved[-1][3]
        saved.append(layer_forward(layer, inputs, codes, index < len(layers) - 1))
    loss_sums, delta = loss.gradient(saved[-1][3], batch.targets, batch.weights)
    needs_input_gradient = codes is not None or input_noise is not None
    grad_codes = None
    for index in range(len(layers) - 1, -1, -1):
        grad_x, layer_grad_codes = layer_backward(
            layers[index], delta, saved[index], codes, index > 0 or needs_input_gradient
        )
        if layer_grad_codes is not None:
            grad_codes = (
                layer_grad_codes if grad_codes is None else grad_codes.add_(layer_grad_codes)
            )
        if index > 0:
            delta = torch.ops.aten.threshold_backward(grad_x, saved[index - 1][3], 0.0)
    if input_noise is not None:
        torch.sum(grad_x * batch.input_noise, (1, 2), keepdim=True, out=grads.input_noise)
        grads.input_noise.mul_(torch.sigmoid(input_noise))
    if codes is not None:
        hypernet_backward(
            values,
            grads,
            grad_codes.view(*x.shape[:2], codes.size),
            batch.weight_noise,
            hidden_inputs,
            hidden_pre,
            batch.masks,
            negative_slope,
        )
    return loss_sums


def layer_forward(layer, out, codes, relu):
    """One main-network layer's output for the rows ``out`` ``(R, n, I)``;
    returns ``(inputs, intermediate, reordered, output)`` for the backward pass.

    A layer's output sum_{c,i} codes[c] inputs[i] head[c, i, o] is contracted
    as (codes outer inputs) @ head, with an (n, C * (I + 1)) intermediate,
    or, for layers that narrow enough to pay for reordering the head twice,
    inputs @ head first, with an (n, C * O) intermediate.  Without codes
    (point estimates) the bias row needs no column of ones.
    """
    n_replicas, n = out.shape[0], out.shape[1]
    fan_in_with_bias, fan_out = layer.fan_in_with_bias, layer.fan_out
    intermediate = reordered = None
    if codes is None:
        inputs = out
        out = torch.baddbmm(layer.bias, inputs, layer.weight)
    elif contracts_inputs_first(n, fan_in_with_bias, fan_out):
        inputs = with_ones(out)
        reordered = layer.head.transpose(1, 2).reshape(n_replicas, fan_in_with_bias, -1)
        intermediate = torch.bmm(inputs, reordered).view(-1, codes.size, fan_out)
        out = torch.bmm(codes.row, intermediate).view(n_replicas, n, fan_out)
    else:
        inputs = with_ones(out)
        intermediate = codes.column * inputs.view(-1, 1, fan_in_with_bias)
        intermediate = intermediate.view(n_replicas, n, -1)
        out = torch.bmm(intermediate, layer.matrix)
    if relu:
        out = torch.relu(out)
    return inputs, intermediate, reordered, out


def layer_backward(layer, delta, saved, codes, needs_grad_x):
    """Write one layer's parameter gradients from ``delta``, the gradient of
    its output; return the gradient of its input (None unless
    ``needs_grad_x``) and, with codes, of the codes ``(R * n, C, 1)``."""
    inputs, intermediate, reordered, _ = saved
    n_replicas, n = delta.shape[0], delta.shape[1]
    fan_in_with_bias, fan_out = layer.fan_in_with_bias, layer.fan_out
    if codes is None:
        sum_over_rows(inputs, delta, layer.grad_weight)
        torch.sum(delta, 1, keepdim=True, out=layer.grad_bias)
        return (torch.bmm(delta, layer.weight_t) if needs_grad_x else None), None
    if reordered is not None:
        grad_per_code = codes.column * delta.view(-1, 1, fan_out)
        grad_per_code = grad_per_code.view(n_replicas, n, -1)
        grad_reordered = torch.bmm(inputs.transpose(1, 2), grad_per_code)
        layer.grad_head.copy_(
            grad_reordered.view(n_replicas, fan_in_with_bias, codes.size, fan_out).transpose(1, 2)
        )
        if fan_out == 1:
            # One product per code: the same values, several times faster than bmm.
            grad_codes = intermediate * delta.view(-1, 1, 1)
        else:
            grad_codes = torch.bmm(intermediate, delta.view(-1, fan_out, 1))
        grad_inputs = torch.bmm(grad_per_code, reordered.transpose(1, 2))
    else:
        sum_over_rows(intermediate, delta, layer.grad_matrix)
        grad_outer = torch.bmm(delta, layer.matrix_t).view(-1, codes.size, fan_in_with_bias)
        grad_codes = torch.bmm(grad_outer, inputs.view(-1, fan_in_with_bias, 1))
        grad_inputs = torch.bmm(codes.row, grad_outer).view(n_replicas, n, -1)
    return grad_inputs[..., :-1], grad_codes


def hypernet_forward(values, weight_noise, masks, hidden_inputs, hidden_pre, negative_slope):
    """The model's codes (:func:`~skhypernet._model.hypernetwork_codes`) of
    every replica, ``(R, n, C)``, appending each layer's input and
    pre-activation to ``hidden_inputs`` and ``hidden_pre`` for
    :func:`hypernet_backward`."""
    return hypernetwork_codes(
        weight_noise,
        values.noise_scale,
        values.hidden_weights,
        values.hidden_biases,
        negative_slope,
        masks,
        (hidden_inputs, hidden_pre),
    )


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
        if index == len(heads) - 1 and fixed_outputs > 0:
            head = head[..., : head.shape[3] - fixed_outputs]
            grad_head = grad_head[..., : grad_head.shape[3] - fixed_outputs]
        total.add_(head_kl(head, grad_head, stacked, scaled_stacked_t, grad_stacked))
        n_weights += head[0, 0].numel()
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


def head_kl(head, grad_head, stacked, scaled_stacked_t, grad_stacked):
    """One layer's part of :func:`kl_gradients`: ``0.5 * sum(fan_in * v -
    log(fan_in * v) + fan_in * m^2)`` over its weights (the -1 of each weight
    left to the caller), per replica; adds its gradient to ``grad_head`` and,
    with respect to ``stacked`` (the mean code, then the centred codes), to
    ``grad_stacked``."""
    n_replicas, code_size = head.shape[0], head.shape[1]
    n_draws = stacked.shape[1] - 1
    fan_in = float(head.shape[2] - 1)
    flat_head = head.reshape(n_replicas, code_size, -1)
    moments = torch.bmm(stacked, flat_head)
    mean, deviations = moments[:, :1], moments[:, 1:]
    # The floor keeps the logarithm finite for weights that do not vary.
    # A product: ``square`` goes through the slower ``pow`` kernel on CPU.
    variance = torch.mul(deviations, deviations).sum(1, keepdim=True)
    variance.mul_(1.0 / (n_draws - 1)).add_(1e-12)
    prior_ratio = variance * fan_in
    terms = prior_ratio.sub_(torch.log(prior_ratio)).addcmul_(mean, mean, value=fan_in)
    # In place: the rows of ``moments`` become the gradients of the mean and
    # of the deviations.
    mean.mul_(fan_in)
    deviations.mul_(variance.reciprocal_().sub_(fan_in).mul_(-1.0 / (n_draws - 1)))
    # Accumulated straight into the heads' gradient where it is one block
    # (not the last layer's when it has outputs outside the distribution):
    # no head-sized temporaries, whose passes over memory cost 12-20 % of the
    # step in lockstep.
    if grad_head.is_contiguous():
        grad_head.view(n_replicas, code_size, -1).baddbmm_(scaled_stacked_t, moments)
    else:
        grad_head.add_(torch.bmm(scaled_stacked_t, moments).view(grad_head.shape))
    grad_stacked.baddbmm_(moments, flat_head.transpose(1, 2))
    return 0.5 * terms.sum((1, 2))
