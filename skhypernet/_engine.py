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

        Returns the weighted loss summed over rows, per output (per target
        for the Gaussian likelihood, one entry for cross-entropy; the batch's
        loss is their mean over outputs divided by the rows), and the gradient
        of that batch loss with respect to ``outputs``.  ``row_weights`` has
        shape ``(n, 1)``.
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
        loss_sums = (weighted_diff * diff).sum(0)
        return loss_sums, weighted_diff.mul_(2.0 / diff.numel())

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
        log_proba = torch.log_softmax(outputs, 1)
        column = targets.unsqueeze(1)
        loss_sums = -(log_proba.gather(1, column) * row_weights).sum(0)
        delta = torch.exp(log_proba)
        delta.scatter_add_(1, column, -torch.ones_like(row_weights))
        return loss_sums, delta.mul_(row_weights / outputs.shape[0])

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
        weight_scale = row_weights / diff.numel()
        loss_sums = 0.5 * ((clipped + scaled) * row_weights).sum(0)
        grad_log_variance = (1.0 - scaled).mul_(0.5 * weight_scale)
        # Clipping passes no gradient outside the bound.
        grad_log_variance.mul_(clipped == outputs[:, means.shape[1] :])
        grad_means = diff.mul_(precision).mul_(weight_scale)
        return loss_sums, torch.cat([grad_means, grad_log_variance], 1)


SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL = SquaredError(), CrossEntropy(), GaussianNLL()
#: The loss table, by the estimators' names.
LOSSES = {loss.name: loss for loss in (SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL)}
#: Weight draws behind each step's estimate of the weight KL term (``kl_weight``).
KL_SAMPLES = 32


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

    def views_of(self, buffer):
        """The same structure made of consecutive views of ``buffer``, in the
        order of :meth:`tensors`."""
        offset = 0

        def view(tensor):
            nonlocal offset
            if tensor is None:
                return None
            part = buffer[offset : offset + tensor.numel()].view_as(tensor)
            offset += tensor.numel()
            return part

        return Parameters(
            view(self.input_noise),
            view(self.noise_scale),
            [view(t) for t in self.hidden_weights],
            [view(t) for t in self.hidden_biases],
            [view(t) for t in self.heads],
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
    """The rows of one training step and their noise draws (None: not used)."""

    x: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # (n, 1)
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
    """Views of one main-network layer's head and its gradient, made once."""

    head: torch.Tensor  # (C, I + 1, O)
    grad_head: torch.Tensor
    matrix: torch.Tensor  # the head as (C * (I + 1), O)
    matrix_t: torch.Tensor
    grad_matrix: torch.Tensor
    fan_in_with_bias: int
    fan_out: int

    @classmethod
    def all(cls, values, grads):
        return [
            cls(
                head,
                grad_head,
                head.view(-1, head.shape[2]),
                head.view(-1, head.shape[2]).t(),
                grad_head.view(-1, head.shape[2]),
                head.shape[1],
                head.shape[2],
            )
            for head, grad_head in zip(values.heads, grads.heads)
        ]


def batch_gradients(values, grads, loss, batch, layers=None):
    """Gradient of the mean weighted loss of one batch, by hand.

    ``values`` and ``grads`` are :class:`Parameters` (views of the flat
    buffers); the gradients are written into ``grads``.  ``layers`` are
    ``Layer.all(values, grads)``, made once for many steps.  Returns the
    weighted loss summed over rows, per output (see :meth:`Loss.gradient`).
    The forward pass is that of ``tests/reference.py``.
    """
    if layers is None:
        layers = Layer.all(values, grads)
    x = batch.x
    n = x.shape[0]
    hyper = values.noise_scale is not None
    input_noise = values.input_noise

    # Forward pass, keeping what the backward pass needs.
    if input_noise is not None:
        x = torch.addcmul(x, batch.input_noise, F.softplus(input_noise))
    if hyper:
        hidden_inputs, hidden_pre = [], []
        codes = hypernet_forward(
            values, batch.weight_noise, batch.masks, hidden_inputs, hidden_pre
        )
        code_size = codes.shape[1]
        codes_column, codes_row = codes.unsqueeze(2), codes.unsqueeze(1)
    # A layer's output sum_{c,i} codes[c] inputs[i] head[c, i, o] is contracted
    # as (codes outer inputs) @ head, with an (n, C * (I + 1)) intermediate,
    # or, for layers that narrow enough to pay for reordering the head twice,
    # inputs @ head first, with an (n, C * O) intermediate.
    last = len(layers) - 1
    saved = []
    out = x
    for index, layer in enumerate(layers):
        inputs = with_ones(out)
        if not hyper:
            out = torch.mm(inputs, layer.head[0])
            intermediate = reordered = None
        elif contracts_inputs_first(n, layer.fan_in_with_bias, layer.fan_out):
            reordered = layer.head.transpose(0, 1).reshape(layer.fan_in_with_bias, -1)
            intermediate = torch.mm(inputs, reordered).view(n, code_size, layer.fan_out)
            out = torch.bmm(codes_row, intermediate).squeeze(1)
        else:
            reordered = None
            intermediate = torch.bmm(codes_column, inputs.unsqueeze(1)).view(n, -1)
            out = torch.mm(intermediate, layer.matrix)
        if index < last:
            out = torch.relu(out)
        saved.append((inputs, intermediate, reordered, out))

    loss_sums, delta = loss.gradient(out, batch.targets, batch.weights)

    # Backward pass through the main network.
    needs_input_gradient = hyper or input_noise is not None
    grad_codes = None
    for index in range(last, -1, -1):
        layer = layers[index]
        inputs, intermediate, reordered, _ = saved[index]
        if not hyper:
            torch.mm(inputs.t(), delta, out=layer.grad_head[0])
            if index == 0 and not needs_input_gradient:
                break
            grad_inputs = torch.mm(delta, layer.head[0].t())
        else:
            if reordered is not None:
                grad_per_code = (codes_column * delta.unsqueeze(1)).view(n, -1)
                grad_reordered = torch.mm(inputs.t(), grad_per_code)
                layer.grad_head.copy_(
                    grad_reordered.view(-1, code_size, layer.fan_out).transpose(0, 1)
                )
                layer_grad_codes = torch.bmm(intermediate, delta.unsqueeze(2)).squeeze(2)
                grad_inputs = torch.mm(grad_per_code, reordered.t())
            else:
                torch.mm(intermediate.t(), delta, out=layer.grad_matrix)
                grad_outer = torch.mm(delta, layer.matrix_t).view(n, code_size, -1)
                layer_grad_codes = torch.bmm(grad_outer, inputs.unsqueeze(2)).squeeze(2)
                grad_inputs = torch.bmm(codes_row, grad_outer).squeeze(1)
            grad_codes = (
                layer_grad_codes if grad_codes is None else grad_codes.add_(layer_grad_codes)
            )
        grad_x = grad_inputs[:, :-1]
        if index > 0:
            delta = torch.ops.aten.threshold_backward(grad_x, saved[index - 1][3], 0.0)
    if input_noise is not None:
        grad_scale = (grad_x * batch.input_noise).sum() * torch.sigmoid(input_noise)
        grads.input_noise.copy_(grad_scale)
    if hyper:
        hypernet_backward(
            values, grads, grad_codes, batch.weight_noise, hidden_inputs, hidden_pre, batch.masks
        )
    return loss_sums


def hypernet_forward(values, weight_noise, masks, hidden_inputs, hidden_pre):
    """Codes ``[z, 1]`` of ``HyperNetwork.codes``; ``masks`` None for no dropout.

    Appends each layer's input and pre-activation to ``hidden_inputs`` and
    ``hidden_pre`` for :func:`hypernet_backward`.
    """
    hidden = weight_noise * F.softplus(values.noise_scale)
    for k, (weight, bias) in enumerate(zip(values.hidden_weights, values.hidden_biases)):
        hidden_inputs.append(hidden)
        pre = torch.addmm(bias, hidden, weight)
        hidden_pre.append(pre)
        hidden = torch.relu(pre)
        if masks is not None:
            hidden = hidden.mul_(masks[k])
    return with_ones(hidden)


def hypernet_backward(
    values, grads, grad_codes, weight_noise, hidden_inputs, hidden_pre, masks, accumulate=None
):
    """Back-propagate ``grad_codes`` through the hypernetwork's hidden layers.

    Without ``accumulate`` the gradients overwrite ``grads``; otherwise
    ``accumulate`` times them is added (the regulariser's share).
    """
    grad_hidden = grad_codes[:, :-1]
    for k in range(len(hidden_pre) - 1, -1, -1):
        if masks is not None:
            grad_hidden = grad_hidden * masks[k]
        grad_pre = torch.ops.aten.threshold_backward(grad_hidden, hidden_pre[k], 0.0)
        if accumulate is None:
            torch.mm(hidden_inputs[k].t(), grad_pre, out=grads.hidden_weights[k])
            torch.sum(grad_pre, 0, out=grads.hidden_biases[k])
        else:
            grads.hidden_weights[k].addmm_(hidden_inputs[k].t(), grad_pre, alpha=accumulate)
            grads.hidden_biases[k].add_(grad_pre.sum(0), alpha=accumulate)
        grad_hidden = torch.mm(grad_pre, values.hidden_weights[k].t())
    grad_scale = torch.sigmoid(values.noise_scale).mul_(
        torch.dot(grad_hidden.flatten(), weight_noise.flatten())
    )
    if accumulate is None:
        grads.noise_scale.copy_(grad_scale)
    else:
        grads.noise_scale.add_(grad_scale, alpha=accumulate)


def kl_gradients(values, grads, weight_noise, coefficient, fixed_outputs):
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
    hidden_inputs, hidden_pre = [], []
    codes = hypernet_forward(values, weight_noise, None, hidden_inputs, hidden_pre)
    n_draws = codes.shape[0]
    mean_code = codes.mean(0)
    centred = codes - mean_code
    grad_codes = torch.zeros_like(codes)
    total = torch.zeros((), dtype=codes.dtype, device=codes.device)
    heads = values.heads
    for index, (head, grad_head) in enumerate(zip(heads, grads.heads)):
        fan_in = float(head.shape[1] - 1)
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
        values, grads, grad_codes, weight_noise, hidden_inputs, hidden_pre, None, coefficient
    )
    return total


class FlatOptimizer:
    """Adam over one flat buffer holding all of a model's parameters.

    On creation the model's parameters are copied into the buffer and made
    views of it, so the model and the optimiser share memory.  :attr:`values`
    and :attr:`grads` are :class:`Parameters` of views of the parameter and
    gradient buffers.  Adding an optimiser option touches this class alone.

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
        parameters = Parameters.of(model)
        tensors = parameters.tensors()
        device, dtype = tensors[0].device, tensors[0].dtype
        size = sum(p.numel() for p in tensors)
        self.flat = torch.empty(size, device=device, dtype=dtype)
        self.flat_grad = torch.zeros(size, device=device, dtype=dtype)
        self.values = parameters.views_of(self.flat)
        self.grads = parameters.views_of(self.flat_grad)
        frozen = model.weight_generator.frozen_masks()
        penalised = model.weight_generator.penalised_masks() if alpha > 0 else {}
        #: 0 where a gradient is dropped before each update; None when none is.
        self.trainable = torch.ones_like(self.flat) if frozen else None
        #: ``alpha`` where the L2 penalty applies, else 0; None without a penalty.
        self.penalty = torch.zeros_like(self.flat) if penalised else None
        for parameter, view, trainable, penalty in zip(
            tensors,
            self.values.tensors(),
            parameters.views_of(self.trainable).tensors() if frozen else tensors,
            parameters.views_of(self.penalty).tensors() if penalised else tensors,
        ):
            view.copy_(parameter.detach())
            parameter.data = view
            if parameter in frozen:
                trainable.copy_(frozen[parameter])
            if parameter in penalised:
                penalty.copy_(alpha * penalised[parameter])
        self.fused = fused_adam_available(device.type)
        if state is None:
            self.exp_avg = torch.zeros_like(self.flat)
            self.exp_avg_sq = torch.zeros_like(self.flat)
            self.step_count = torch.zeros((), device=device, dtype=dtype)
        else:
            self.exp_avg = state["exp_avg"].to(device)
            self.exp_avg_sq = state["exp_avg_sq"].to(device)
            self.step_count = state["step"].to(device)

    def step(self, n_rows):
        """Update the parameters from the gradients of a batch of ``n_rows`` rows."""
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

    def snapshot(self):
        """A copy of the parameters, for :meth:`restore`."""
        return self.flat.clone()

    def restore(self, snapshot, reset_moments):
        """Put back the parameters of ``snapshot``; optionally restart Adam."""
        self.flat.copy_(snapshot)
        if reset_moments:
            self.exp_avg.zero_()
            self.exp_avg_sq.zero_()
            self.step_count.zero_()

    def state_dict(self):
        """Adam's moments and step count."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step_count}


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
    """Tensors of one training set, already on the training device."""

    X: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # normalised to mean 1 over the whole set
    loss: Loss

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
    kl_coefficient = kl_weight / n_samples if weight_generator.noise_dim else 0.0
    # Noise is drawn for whole chunks of batches at once: fewer, larger draws.
    chunk = max(batch_size, NOISE_CHUNK_ROWS // batch_size * batch_size)
    total = None
    kl_total = 0.0
    layers = Layer.all(optimizer.values, optimizer.grads)
    for start in range(0, n_samples, chunk):
        rows = order[start : start + chunk]
        noise = model.draw_noise(rows.shape[0], data.X.shape[1], generator)
        masks = weight_generator.dropout_masks(noise.dropout_uniform)

        # Every tensor is cut into the steps' batches at once: views, no copies.
        def batches(tensor):
            return None if tensor is None or not tensor.numel() else tensor.split(batch_size)

        columns = [
            batches(data.X[rows]),
            batches(data.targets[rows]),
            batches(data.weights[rows].unsqueeze(1)),
            batches(noise.input_noise),
            batches(noise.weight_noise),
        ]
        n_steps = len(columns[0])
        columns = [column or [None] * n_steps for column in columns]
        layer_masks = zip(*(batches(mask) for mask in masks)) if masks else [None] * n_steps
        if kl_coefficient > 0:
            kl_noise = torch.randn(
                (n_steps, KL_SAMPLES, weight_generator.noise_dim),
                generator=generator,
                device=device,
            )
        step_sums, step_kl = [], []
        values, grads, loss = optimizer.values, optimizer.grads, data.loss
        shared_outputs = weight_generator.shared_outputs
        for step, (*tensors, step_masks) in enumerate(zip(*columns, layer_masks)):
            batch = Batch(*tensors, step_masks)
            step_sums.append(batch_gradients(values, grads, loss, batch, layers))
            if kl_coefficient > 0:
                step_kl.append(
                    kl_gradients(values, grads, kl_noise[step], kl_coefficient, shared_outputs)
                )
            optimizer.step(batch.x.shape[0])
        sums = torch.stack(step_sums).sum(0)
        total = sums if total is None else total + sums
        if step_kl:
            kl_total += float(torch.stack(step_kl).sum())
        if interrupted:
            raise KeyboardInterrupt
    n_steps = -(-n_samples // batch_size)
    return total.cpu().double() / n_samples, kl_total / n_steps, n_steps


def kl_scale(loss, history):
    """Factor that puts the KL term on the scale of the loss as a likelihood.

    Cross-entropy and the Gaussian likelihood are negative log-likelihoods
    per row, so a variational objective adds ``KL / n_rows``: the factor is 1.
    For the squared error, :meth:`SquaredError.kl_scale`.
    """
    return loss.kl_scale(history.last_output_losses)


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
