"""The training loop shared by every estimator.

The engine knows nothing about scikit-learn.  It trains a
:class:`~skhypernet._model.StochasticMLP` (hypernetwork or point-estimate
weights) with Adam on shuffled mini-batches and keeps the loss history and
the stopping rule of scikit-learn's MLP.

Speed comes from three choices, measured in ``docs/performance.md``:

- all parameters live in one flat buffer, their gradients in another, so one
  fused Adam call updates everything;
- the forward and backward passes are written out by hand
  (:func:`train_rows`): no autograd graph, per-row weights never
  materialised, gradients written straight into the flat buffer;
- a whole pass over the rows runs inside one TorchScript function, so the
  per-step cost at batch size 1 is a few microseconds of dispatch per
  operation instead of Python's.  Where TorchScript is unavailable the same
  function runs as plain Python.

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
from typing import List, Tuple

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
#: Warnings point at the user's call: warn <- train, warn_not_converged or
#: warn_if_far_above <- the estimator's ``_fit`` <- ``fit`` or ``partial_fit``
#: <- the user's code.
USER_STACKLEVEL = 4


#: Losses, as passed to the scripted functions.
SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL = 0, 1, 2
LOSSES = {
    "squared_error": SQUARED_ERROR,
    "cross_entropy": CROSS_ENTROPY,
    "gaussian_nll": GAUSSIAN_NLL,
}
#: The log-variance outputs of the Gaussian likelihood are clipped to this range.
LOG_VARIANCE_BOUND = 15.0
#: Weight draws behind each step's estimate of the weight KL term (``kl_weight``).
KL_SAMPLES = 32


def split_gaussian(outputs):
    """Means and (clipped) log-variances of Gaussian-likelihood outputs."""
    n_targets = outputs.shape[-1] // 2
    means = outputs[..., :n_targets]
    log_variances = outputs[..., n_targets:].clamp(-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)
    return means, log_variances


@torch.jit.ignore
def adam_step(
    flat: torch.Tensor,
    flat_grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    adam_settings: List[float],
) -> None:
    """One Adam update of the flat buffer, with torch's functional Adam (the
    update of torch.optim.Adam), fused into one kernel where torch has one.

    ``adam_settings`` is ``[learning rate, beta_1, beta_2, epsilon]``.  Runs
    as Python even inside TorchScript, which would drop the in-place call as
    dead code.
    """
    update_adam(
        flat,
        flat_grad,
        exp_avg,
        exp_avg_sq,
        step,
        adam_settings,
        fused=fused_adam_available(flat.device.type),
    )


def update_adam(flat, flat_grad, exp_avg, exp_avg_sq, step, adam_settings, fused):
    """torch's functional Adam on one tensor (``step`` is incremented)."""
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


def train_rows(
    X: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    loss: int,
    input_noise: torch.Tensor,
    weight_noise: torch.Tensor,
    dropout_masks: torch.Tensor,
    hidden_sizes: List[int],
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    n_hidden: int,
    flat: torch.Tensor,
    flat_grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    adam_settings: List[float],
    kl_noise: torch.Tensor,
    kl_coefficient: float,
    kl_fixed_outputs: int,
    trainable: torch.Tensor,
    penalty: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Train on the rows ``order`` in mini-batches.

    ``params`` are views into ``flat``: ``[input_noise_raw, noise_scale_raw,
    hidden weights..., hidden biases..., heads...]`` (the first two are empty
    tensors when absent); ``grads`` the matching views into ``flat_grad``.
    The noise tensors hold the draws of the rows in the order of ``order``;
    ``dropout_masks`` the inverted-dropout masks of all hypernetwork layers.
    With ``kl_coefficient > 0``, every step adds that multiple of the weight
    KL estimate (:func:`kl_gradients`, with ``kl_fixed_outputs``) from its
    slice ``kl_noise[step]``.
    Unless empty, ``penalty * flat / batch rows`` is added to the gradients
    (the L2 penalty, as in scikit-learn's MLP), which are then multiplied by
    ``trainable`` (unless empty) before the Adam step (:func:`adam_step`).

    Returns the weighted loss summed over rows, per output, and the sum of
    the steps' KL estimates.
    """
    total = torch.zeros(0, dtype=X.dtype, device=X.device)
    kl_total = torch.zeros((), dtype=X.dtype, device=X.device)
    n_rows = order.shape[0]
    # One gather per call; the batches are then contiguous slices.
    X, targets, weights = X[order], targets[order], weights[order]
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        loss_sums = batch_gradients(
            X[start:stop],
            targets[start:stop],
            weights[start:stop],
            loss,
            input_noise[start:stop] if input_noise.numel() > 0 else input_noise,
            weight_noise[start:stop] if weight_noise.numel() > 0 else weight_noise,
            dropout_masks[start:stop] if dropout_masks.numel() > 0 else dropout_masks,
            hidden_sizes,
            params,
            grads,
            n_hidden,
        )
        total = loss_sums if total.numel() == 0 else total + loss_sums
        if kl_coefficient > 0.0:
            kl_total += kl_gradients(
                kl_noise[start // batch_size],
                params,
                grads,
                n_hidden,
                kl_coefficient,
                kl_fixed_outputs,
            )
        if penalty.numel() > 0:
            flat_grad.addcmul_(penalty, flat, value=1.0 / (stop - start))
        if trainable.numel() > 0:
            flat_grad.mul_(trainable)
        adam_step(flat, flat_grad, exp_avg, exp_avg_sq, step, adam_settings)
    return total, kl_total


def contracts_inputs_first(n_rows: int, fan_in_with_bias: int, fan_out: int) -> bool:
    """Whether a layer is cheaper as ``inputs @ head`` first (see batch_gradients)."""
    return n_rows * (fan_in_with_bias - fan_out) > 2 * fan_in_with_bias * fan_out


def batch_gradients(
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    loss: int,
    input_noise: torch.Tensor,
    weight_noise: torch.Tensor,
    dropout_masks: torch.Tensor,
    hidden_sizes: List[int],
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    n_hidden: int,
) -> torch.Tensor:
    """Gradient of the mean weighted loss of one batch, by hand.

    Writes the gradients into ``grads`` and returns the weighted loss summed
    over rows, per output (per target for the Gaussian likelihood, one entry
    for cross-entropy); the batch's loss is their mean over outputs.  The
    forward pass is that of ``tests/reference.py``.
    """
    n = x.shape[0]
    input_noise_raw, noise_scale_raw = params[0], params[1]
    hidden_weights = params[2 : 2 + n_hidden]
    hidden_biases = params[2 + n_hidden : 2 + 2 * n_hidden]
    heads = params[2 + 2 * n_hidden :]
    hyper = noise_scale_raw.numel() > 0
    noisy_input = input_noise_raw.numel() > 0
    ones = torch.ones((n, 1), dtype=x.dtype, device=x.device)

    # Forward pass, keeping what the backward pass needs.
    if noisy_input:
        x = torch.addcmul(x, input_noise, F.softplus(input_noise_raw))
    hidden_inputs: List[torch.Tensor] = []
    hidden_pre: List[torch.Tensor] = []
    masks: List[torch.Tensor] = []
    codes = ones
    if hyper:
        if dropout_masks.numel() > 0:
            masks = torch.split(dropout_masks, hidden_sizes, 1)
        codes = hypernet_forward(
            weight_noise,
            noise_scale_raw,
            hidden_weights,
            hidden_biases,
            masks,
            hidden_inputs,
            hidden_pre,
        )
    code_size = codes.shape[1]
    # A layer's output sum_{c,i} codes[c] inputs[i] head[c, i, o] is contracted
    # as (codes outer inputs) @ head, with an (n, C * (I + 1)) intermediate,
    # or, for layers that narrow enough to pay for reordering the head twice,
    # inputs @ head first, with an (n, C * O) intermediate.
    narrow: List[bool] = []
    for head in heads:
        narrow.append(hyper and contracts_inputs_first(n, head.shape[1], head.shape[2]))
    layer_inputs: List[torch.Tensor] = []
    contracted: List[torch.Tensor] = []
    reordered_heads: List[torch.Tensor] = []
    activations: List[torch.Tensor] = []
    out = x
    for index, head in enumerate(heads):
        inputs = torch.cat([out, ones], 1)
        layer_inputs.append(inputs)
        fan_out = head.shape[2]
        if not hyper:
            contracted.append(inputs)
            out = torch.mm(inputs, head[0])
        elif narrow[index]:
            reordered = head.transpose(0, 1).reshape(head.shape[1], -1)
            reordered_heads.append(reordered)
            per_code = torch.mm(inputs, reordered).view(n, code_size, fan_out)
            contracted.append(per_code)
            out = torch.bmm(codes.unsqueeze(1), per_code).squeeze(1)
        else:
            reordered_heads.append(head)
            outer = (codes.unsqueeze(2) * inputs.unsqueeze(1)).flatten(1)
            contracted.append(outer)
            out = torch.mm(outer, head.view(-1, fan_out))
        if index < len(heads) - 1:
            out = torch.relu(out)
            activations.append(out)

    # Loss and its gradient with respect to the outputs.
    column_weights = weights.unsqueeze(1)
    # TorchScript cannot read module constants: 1 is CROSS_ENTROPY, 2 GAUSSIAN_NLL,
    # 15.0 LOG_VARIANCE_BOUND (test_gaussian_gradients_beyond_the_log_variance_bound
    # fails if they drift apart).
    if loss == 1:
        log_proba = torch.log_softmax(out, 1)
        loss_sums = -(log_proba.gather(1, targets.unsqueeze(1)) * column_weights).sum(0)
        delta = torch.exp(log_proba)
        delta.scatter_add_(1, targets.unsqueeze(1), -torch.ones_like(column_weights))
        delta = delta * (column_weights / n)
    elif loss == 2:
        n_targets = out.shape[1] // 2
        diff = out[:, :n_targets] - targets
        log_variance = out[:, n_targets:]
        clipped = log_variance.clamp(-15.0, 15.0)
        precision = torch.exp(-clipped)
        scaled = diff.square() * precision
        weight_scale = column_weights / (n * n_targets)
        loss_sums = 0.5 * ((clipped + scaled) * column_weights).sum(0)
        grad_log_variance = 0.5 * (1.0 - scaled) * weight_scale
        # Clipping passes no gradient outside the bound.
        grad_log_variance = grad_log_variance * (clipped == log_variance)
        delta = torch.cat([diff * precision * weight_scale, grad_log_variance], 1)
    else:
        diff = out - targets
        weighted_diff = diff * column_weights
        loss_sums = (weighted_diff * diff).sum(0)
        delta = weighted_diff * (2.0 / (n * out.shape[1]))

    # Backward pass through the main network.
    grad_codes = torch.zeros_like(codes)
    grad_x = delta
    for index in range(len(heads) - 1, -1, -1):
        head = heads[index]
        fan_out = head.shape[2]
        grad_head = grads[2 + 2 * n_hidden + index]
        last_needed = index > 0 or hyper or noisy_input
        if not hyper:
            torch.mm(contracted[index].t(), delta, out=grad_head[0])
            if not last_needed:
                break
            grad_inputs = torch.mm(delta, head[0].t())
        elif narrow[index]:
            per_code = contracted[index]
            grad_per_code = codes.unsqueeze(2) * delta.unsqueeze(1)
            grad_reordered = torch.mm(layer_inputs[index].t(), grad_per_code.flatten(1))
            grad_head.copy_(grad_reordered.view(-1, code_size, fan_out).transpose(0, 1))
            grad_codes += torch.bmm(per_code, delta.unsqueeze(2)).squeeze(2)
            grad_inputs = torch.mm(grad_per_code.flatten(1), reordered_heads[index].t())
        else:
            torch.mm(contracted[index].t(), delta, out=grad_head.view(-1, fan_out))
            grad_outer = torch.mm(delta, head.view(-1, fan_out).t()).view(n, code_size, -1)
            grad_codes += torch.bmm(grad_outer, layer_inputs[index].unsqueeze(2)).squeeze(2)
            grad_inputs = torch.bmm(codes.unsqueeze(1), grad_outer).squeeze(1)
        grad_x = grad_inputs[:, :-1]
        if index > 0:
            delta = torch.ops.aten.threshold_backward(grad_x, activations[index - 1], 0.0)
    if noisy_input:
        grads[0].copy_((grad_x * input_noise).sum() * torch.sigmoid(input_noise_raw))

    if hyper:
        hypernet_backward(
            grad_codes,
            weight_noise,
            hidden_inputs,
            hidden_pre,
            masks,
            params,
            grads,
            n_hidden,
            0.0,
        )
    return loss_sums


def hypernet_forward(
    weight_noise: torch.Tensor,
    noise_scale_raw: torch.Tensor,
    hidden_weights: List[torch.Tensor],
    hidden_biases: List[torch.Tensor],
    masks: List[torch.Tensor],
    hidden_inputs: List[torch.Tensor],
    hidden_pre: List[torch.Tensor],
) -> torch.Tensor:
    """Codes ``[z, 1]`` of ``HyperNetwork.codes``; ``masks`` empty for no dropout.

    Appends each layer's input and pre-activation to ``hidden_inputs`` and
    ``hidden_pre`` for :func:`hypernet_backward`.
    """
    hidden = weight_noise * F.softplus(noise_scale_raw)
    for k in range(len(hidden_weights)):
        hidden_inputs.append(hidden)
        pre = torch.addmm(hidden_biases[k], hidden, hidden_weights[k])
        hidden_pre.append(pre)
        hidden = torch.relu(pre)
        if len(masks) > 0:
            hidden = hidden * masks[k]
    return torch.cat([hidden, torch.ones_like(hidden[:, :1])], 1)


def hypernet_backward(
    grad_codes: torch.Tensor,
    weight_noise: torch.Tensor,
    hidden_inputs: List[torch.Tensor],
    hidden_pre: List[torch.Tensor],
    masks: List[torch.Tensor],
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    n_hidden: int,
    accumulate: float,
) -> None:
    """Back-propagate ``grad_codes`` through the hypernetwork's hidden layers.

    With ``accumulate == 0`` the gradients overwrite ``grads``; otherwise
    ``accumulate`` times them is added (the regulariser's share).
    """
    hidden_weights = params[2 : 2 + n_hidden]
    noise_scale_raw = params[1]
    grad_hidden = grad_codes[:, :-1]
    for k in range(n_hidden - 1, -1, -1):
        if len(masks) > 0:
            grad_hidden = grad_hidden * masks[k]
        grad_pre = torch.ops.aten.threshold_backward(grad_hidden, hidden_pre[k], 0.0)
        if accumulate == 0.0:
            torch.mm(hidden_inputs[k].t(), grad_pre, out=grads[2 + k])
            torch.sum(grad_pre, 0, out=grads[2 + n_hidden + k])
        else:
            grads[2 + k].addmm_(hidden_inputs[k].t(), grad_pre, alpha=accumulate)
            grads[2 + n_hidden + k].add_(grad_pre.sum(0), alpha=accumulate)
        grad_hidden = torch.mm(grad_pre, hidden_weights[k].t())
    grad_scale = (grad_hidden * weight_noise).sum() * torch.sigmoid(noise_scale_raw)
    if accumulate == 0.0:
        grads[1].copy_(grad_scale)
    else:
        grads[1].add_(grad_scale, alpha=accumulate)


def kl_gradients(
    weight_noise: torch.Tensor,
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    n_hidden: int,
    coefficient: float,
    fixed_outputs: int,
) -> torch.Tensor:
    """Add ``coefficient`` times the gradient of the weight KL estimate to ``grads``.

    The generated weights of the K rows of ``weight_noise`` (dropout off)
    give every main-network parameter p a sample mean m and variance v; the
    estimate is ``sum_p KL(N(m, v) || N(0, 1 / fan_in))``: the Gaussian prior
    minus the entropy of the Gaussian marginals.  Because every parameter is
    linear in the code, ``w = code @ head``, m and v come from the mean code
    and the centred codes, so per-sample weights are never needed for the
    gradient of the codes.  The last ``fixed_outputs`` outputs of the last
    layer do not vary with the noise (``HyperNetwork.shared_outputs``): they
    are point estimates, outside the distribution.  Returns the estimate.
    """
    hidden_weights = params[2 : 2 + n_hidden]
    hidden_biases = params[2 + n_hidden : 2 + 2 * n_hidden]
    heads = params[2 + 2 * n_hidden :]
    hidden_inputs: List[torch.Tensor] = []
    hidden_pre: List[torch.Tensor] = []
    no_masks: List[torch.Tensor] = []
    codes = hypernet_forward(
        weight_noise, params[1], hidden_weights, hidden_biases, no_masks, hidden_inputs, hidden_pre
    )
    n_draws = codes.shape[0]
    mean_code = codes.mean(0)
    centred = codes - mean_code
    grad_codes = torch.zeros_like(codes)
    total = torch.zeros((), dtype=codes.dtype, device=codes.device)
    for index, head in enumerate(heads):
        fan_in = float(head.shape[1] - 1)
        grad_head = grads[2 + 2 * n_hidden + index]
        if index == len(heads) - 1 and fixed_outputs > 0:
            head = head[:, :, : head.shape[2] - fixed_outputs]
            grad_head = grad_head[:, :, : grad_head.shape[2] - fixed_outputs]
        flat_head = head.reshape(head.shape[0], -1)
        mean = torch.mv(flat_head.t(), mean_code)
        deviations = torch.mm(centred, flat_head)
        # The floor keeps the logarithm finite for weights that do not vary.
        variance = deviations.square().sum(0) / (n_draws - 1) + 1e-12
        prior_ratio = fan_in * variance
        total += 0.5 * (prior_ratio + fan_in * mean.square() - 1.0 - torch.log(prior_ratio)).sum()
        grad_mean = fan_in * mean
        grad_deviations = deviations * ((fan_in - 1.0 / variance) / (n_draws - 1))
        grad_flat_head = torch.outer(mean_code, grad_mean)
        grad_flat_head.addmm_(centred.t(), grad_deviations)
        grad_head.add_(grad_flat_head.view(grad_head.shape), alpha=coefficient)
        # The centred codes' gradient has zero column means already (so does
        # ``deviations``): no correction for the centring is needed.
        grad_codes += torch.mm(grad_deviations, flat_head.t())
        grad_codes += torch.mv(flat_head, grad_mean).unsqueeze(0) / n_draws
    hypernet_backward(
        grad_codes,
        weight_noise,
        hidden_inputs,
        hidden_pre,
        no_masks,
        params,
        grads,
        n_hidden,
        coefficient,
    )
    return total


def _compile(function):
    try:
        with warnings.catch_warnings():
            # Deprecated in favour of torch.compile, which needs a C++ compiler
            # and compiles for tens of seconds; TorchScript needs neither.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(function)
    except Exception:  # noqa: BLE001 - any failure means: run as Python
        return function


_compiled = {}


def _train_rows():
    # Scripted lazily: the first fit pays the compilation (a second or so).
    if "train_rows" not in _compiled:
        _compiled["train_rows"] = _compile(train_rows)
    return _compiled["train_rows"]


def _parameter_list(model):
    """Parameters in the order ``train_rows`` expects; None where absent."""
    return [model.input_noise_raw, *model.weight_generator.trained_parameters()]


class FlatOptimizer:
    """Adam over one flat buffer holding all of a model's parameters.

    On creation the model's parameters are copied into the buffer and made
    views of it, so the model and the optimiser share memory.

    Parameters
    ----------
    model : StochasticMLP
    learning_rate : float
    state : dict, optional
        A :meth:`state_dict` to resume from.
    beta_1, beta_2, epsilon : float
        Adam's decay rates of the moment estimates and its numerical floor.
    alpha : float
        L2 penalty of the parameters the weight generator names in
        ``penalised_masks`` (the main network's weights, not its biases).
    """

    def __init__(
        self,
        model,
        learning_rate,
        state=None,
        *,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=0.0,
    ):
        self.learning_rate = learning_rate
        self.adam_settings = [float(learning_rate), float(beta_1), float(beta_2), float(epsilon)]
        parameters = _parameter_list(model)
        present = [p for p in parameters if p is not None]
        device, dtype = present[0].device, present[0].dtype
        size = sum(p.numel() for p in present)
        self.flat = torch.empty(size, device=device, dtype=dtype)
        self.flat_grad = torch.zeros(size, device=device, dtype=dtype)
        empty = torch.empty(0, device=device, dtype=dtype)
        frozen = model.weight_generator.frozen_masks()
        #: 0 where a gradient is dropped before each update; empty when none is.
        self.trainable = torch.ones_like(self.flat) if frozen else empty
        penalised = model.weight_generator.penalised_masks() if alpha > 0 else {}
        #: ``alpha`` where the L2 penalty applies, else 0; empty without a penalty.
        self.penalty = torch.zeros_like(self.flat) if penalised else empty
        self.params, self.grads = [], []
        offset = 0
        for parameter in parameters:
            if parameter is None:
                self.params.append(empty)
                self.grads.append(empty)
                continue
            numel = parameter.numel()
            if parameter in frozen:
                self.trainable[offset : offset + numel] = frozen[parameter].flatten()
            if parameter in penalised:
                self.penalty[offset : offset + numel] = alpha * penalised[parameter].flatten()
            view = self.flat[offset : offset + numel].view_as(parameter)
            view.copy_(parameter.detach())
            parameter.data = view
            self.params.append(view)
            self.grads.append(self.flat_grad[offset : offset + numel].view_as(parameter))
            offset += numel
        self.n_hidden = len(model.weight_generator.hidden_sizes)
        if state is None:
            self.exp_avg = torch.zeros_like(self.flat)
            self.exp_avg_sq = torch.zeros_like(self.flat)
            self.step = torch.zeros((), device=device, dtype=dtype)
        else:
            self.exp_avg = state["exp_avg"].to(device)
            self.exp_avg_sq = state["exp_avg_sq"].to(device)
            self.step = state["step"].to(device)

    def snapshot(self):
        """A copy of the parameters, for :meth:`restore`."""
        return self.flat.clone()

    def restore(self, snapshot, reset_moments):
        """Put back the parameters of ``snapshot``; optionally restart Adam."""
        self.flat.copy_(snapshot)
        if reset_moments:
            self.exp_avg.zero_()
            self.exp_avg_sq.zero_()
            self.step.zero_()

    def state_dict(self):
        """Adam's moments and step count."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step}


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
def threads_for(flops_per_step):
    """Use one thread inside the block for small steps, then restore the count."""
    previous = torch.get_num_threads()
    single = flops_per_step < SINGLE_THREAD_FLOPS and previous > 1
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
    where stopping is safe: raised inside the scripted training loop, the
    KeyboardInterrupt would arrive wrapped in a RuntimeError.  Outside the
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
    """Tensors of one training set, already on the training device."""

    X: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # normalised to mean 1 over the whole set
    loss: int  # SQUARED_ERROR, CROSS_ENTROPY or GAUSSIAN_NLL

    @property
    def n_samples(self):
        return self.X.shape[0]


def run_epoch(
    model, optimizer, data, batch_size, shuffle, generator, kl_weight=0.0, interrupted=()
):
    """One pass over ``data`` in mini-batches.

    ``kl_weight`` multiplies the weight KL estimate divided by the number of
    rows, so that over an epoch the steps add up to the KL term of a
    variational objective.  A non-empty ``interrupted`` (see
    :func:`interrupts_collected`) raises KeyboardInterrupt after the chunk of
    batches in progress.

    Returns
    -------
    output_losses : torch.Tensor
        Mean weighted loss per output (the data term).
    kl : float
        Mean of the steps' KL estimates (0 without ``kl_weight``).
    n_steps : int
    """
    n_samples = data.n_samples
    device = data.X.device
    if shuffle:
        order = torch.randperm(n_samples, generator=generator, device=device)
    else:
        order = torch.arange(n_samples, device=device)
    weight_generator = model.weight_generator
    hidden_sizes = list(weight_generator.hidden_sizes)
    kl_coefficient = kl_weight / n_samples if weight_generator.noise_dim else 0.0
    # Noise is drawn for whole chunks of batches at once: fewer, larger draws.
    chunk = max(batch_size, NOISE_CHUNK_ROWS // batch_size * batch_size)
    total = None
    kl_total = 0.0
    train = _train_rows()
    for start in range(0, n_samples, chunk):
        rows = order[start : start + chunk]
        noise = model.draw_noise(rows.shape[0], data.X.shape[1], generator)
        n_steps = -(-rows.shape[0] // batch_size)
        if kl_coefficient > 0:
            kl_noise = torch.randn(
                (n_steps, KL_SAMPLES, weight_generator.noise_dim),
                generator=generator,
                device=device,
            )
        else:
            kl_noise = torch.empty(0, device=device)
        sums, kl_sum = train(
            data.X,
            data.targets,
            data.weights,
            rows,
            batch_size,
            data.loss,
            noise.input_noise,
            noise.weight_noise,
            weight_generator.dropout_mask_matrix(noise.dropout_uniform),
            hidden_sizes,
            optimizer.params,
            optimizer.grads,
            optimizer.n_hidden,
            optimizer.flat,
            optimizer.flat_grad,
            optimizer.exp_avg,
            optimizer.exp_avg_sq,
            optimizer.step,
            optimizer.adam_settings,
            kl_noise,
            kl_coefficient,
            weight_generator.shared_outputs,
            optimizer.trainable,
            optimizer.penalty,
        )
        total = sums if total is None else total + sums
        kl_total += float(kl_sum)
        if interrupted:
            raise KeyboardInterrupt
    n_steps = -(-n_samples // batch_size)
    return total.cpu().double() / n_samples, kl_total / n_steps, n_steps


def kl_scale(loss, history):
    """Factor that puts the KL term on the scale of the loss as a likelihood.

    Cross-entropy and the Gaussian likelihood are negative log-likelihoods
    per row, so a variational objective adds ``KL / n_rows``: the factor is 1.
    The squared error of standardised targets is ``2 sigma^2`` times the
    negative log-likelihood of Gaussian noise of variance ``sigma^2``, up to a
    constant, so the KL term is scaled by ``2 sigma^2``, with ``sigma^2`` the
    last epoch's mean loss (1, the targets' variance, before the first).
    """
    if loss != SQUARED_ERROR:
        return 1.0
    losses = history.last_output_losses
    return 2.0 * (sum(losses) / len(losses) if losses else 1.0)


def train(
    model,
    optimizer,
    data,
    history,
    *,
    max_epochs,
    batch_size,
    shuffle,
    tol,
    n_iter_no_change,
    generator,
    validation_score=None,
    verbose=0,
    kl_weight=0.0,
):
    """Run up to ``max_epochs`` epochs, stopping as scikit-learn's MLP does.

    Parameters
    ----------
    model : StochasticMLP
        Trained in place.
    optimizer : FlatOptimizer
    data : TrainingData
    history : TrainingHistory
        Updated in place.
    max_epochs : int
        Epochs to run at most; 1 for ``partial_fit``.
    batch_size : int
    shuffle : bool
    tol : float
    n_iter_no_change : int or inf
        Stop when the loss (or validation score) has not improved by ``tol``
        for more than this many consecutive epochs.
    generator : torch.Generator
        Source of all randomness: batch order, weight and input noise, dropout.
    validation_score : callable, optional
        Called after every epoch; returns a score to maximise.  When given,
        the parameters with the best score are restored at the end.
    verbose : int
    kl_weight : float
        Weight of the KL term of the weight distribution, relative to a
        variational objective (see :func:`kl_scale`); the recorded loss
        includes the term.

    Returns
    -------
    stopped : bool
        Whether the stopping rule ended training before ``max_epochs``.
    """
    start_time = time.perf_counter()
    stopped = False
    snapshot = None
    try:
        work = step_flops(model, batch_size)
        with (
            flushed_denormals(),
            threads_for(work),
            torch.no_grad(),
            interrupts_collected() as interrupted,
        ):
            for epoch in range(max_epochs):
                if interrupted:
                    raise KeyboardInterrupt
                # The last finished epoch's parameters, kept for divergence and Ctrl-C.
                snapshot = optimizer.snapshot()
                epoch_kl_weight = kl_weight * kl_scale(data.loss, history)
                output_losses, kl, n_steps = run_epoch(
                    model,
                    optimizer,
                    data,
                    batch_size,
                    shuffle,
                    generator,
                    epoch_kl_weight,
                    interrupted,
                )
                loss = float(output_losses.mean()) + epoch_kl_weight * kl / data.n_samples
                if not math.isfinite(loss):
                    optimizer.restore(snapshot, reset_moments=True)
                    warnings.warn(
                        f"Training diverged in epoch {history.n_iter + 1}: the loss became "
                        f"{loss}. The parameters from before that epoch are kept and the "
                        "optimiser's state is reset. Lower learning_rate_init, or scale X "
                        "and y (for example with StandardScaler).",
                        ConvergenceWarning,
                        stacklevel=USER_STACKLEVEL,
                    )
                    stopped = True
                    break
                score = validation_score() if validation_score is not None else None
                history.n_samples_seen += data.n_samples
                history.n_steps += n_steps
                history.last_output_losses = output_losses.tolist()
                history.record(loss, score, tol, model)
                snapshot = None  # the epoch is finished: nothing to roll back
                if history.diffusion_noise is not None:
                    history.weight_diffusion.append(
                        model.weight_generator.diffusion(history.diffusion_noise)
                    )
                    history.diffusion_steps.append(history.n_steps)
                if verbose:
                    report_epoch(
                        verbose,
                        epoch,
                        max_epochs,
                        history.n_iter,
                        loss,
                        score,
                        time.perf_counter() - start_time,
                    )
                if history.no_improvement_count > n_iter_no_change:
                    stopped = True
                    if verbose > 1:
                        sys.stderr.write("\n")
                    if verbose:
                        measure = "Validation score" if score is not None else "Training loss"
                        print(
                            f"{measure} did not improve more than tol={tol:f} for "
                            f"{n_iter_no_change} consecutive epochs. Stopping."
                        )
                    break
            if interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if snapshot is not None:
            with torch.no_grad():
                optimizer.restore(snapshot, reset_moments=False)
        warnings.warn(
            "Training interrupted by user: the model keeps the parameters of the last "
            f"finished epoch ({history.n_iter} in all).",
            stacklevel=USER_STACKLEVEL,
        )
        stopped = True
    if validation_score is not None and history.best_state is not None:
        model.load_state_dict(history.best_state)
    return stopped


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


def warn_if_far_above(output_losses, reference):
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
            stacklevel=USER_STACKLEVEL,
        )


def warn_not_converged(max_epochs):
    warnings.warn(
        f"Stochastic optimizer: maximum iterations ({max_epochs}) reached and the "
        "optimization hasn't converged yet.",
        ConvergenceWarning,
        stacklevel=USER_STACKLEVEL,
    )
