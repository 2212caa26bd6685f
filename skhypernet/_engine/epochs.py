"""One epoch of every replica in lockstep, and the per-epoch history."""

import copy
from dataclasses import dataclass, field

import torch

from .gradients import Batch, Layer, batch_gradients, kl_gradients
from .losses import Loss

#: Rows whose noise is drawn at once; bounds the noise buffers' memory.
NOISE_CHUNK_ROWS = 16384
#: Weight draws behind each estimate of the weight KL term (``kl_weight``).
KL_SAMPLES = 32
#: The KL term's gradient is estimated anew every this many steps and reused
#: in between: it changes little from one step to the next, and its estimate
#: costs more than a small batch's step (see :func:`kl_gradients`).
KL_REFRESH_STEPS = 16


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
    is made every ``KL_REFRESH_STEPS`` steps and its gradient reused between.
    A non-empty ``interrupted`` (see :func:`interrupts_collected`) raises
    KeyboardInterrupt after the step in progress.

    Returns
    -------
    output_losses : torch.Tensor of shape (R, n_outputs)
        Mean weighted loss per replica and output (the data term).
    kl : list of float
        Mean of each replica's KL estimates (0 without ``kl_weights``).
    n_steps : int
    """
    n_samples = data.n_samples
    weight_generator = models[0].weight_generator
    orders = batch_orders(n_samples, shuffle, generators, data.X.device)
    kl_term = None
    if weight_generator.is_distribution and any(kl_weights or ()):
        kl_term = KLTerm(optimizer, weight_generator, kl_weights, n_samples)
    # Noise is drawn for whole chunks of batches at once: fewer, larger draws.
    chunk = max(batch_size, NOISE_CHUNK_ROWS // batch_size * batch_size)
    layers = Layer.all(optimizer.values, optimizer.grads)
    slope = weight_generator.negative_slope
    chunk_sums = []
    for start in range(0, n_samples, chunk):
        rows = orders[:, start : start + chunk]
        n_steps = -(-rows.shape[1] // batch_size)
        batches = chunk_batches(models, data, rows, generators, batch_size, n_steps)
        if kl_term is not None:
            kl_term.draw(generators, start // batch_size, n_steps)
        step_sums = []
        for step, batch in enumerate(batches):
            step_sums.append(
                batch_gradients(optimizer.values, optimizer.grads, data.loss, batch, layers, slope)
            )
            if kl_term is not None:
                kl_term.add_gradient(step)
            optimizer.step(batch.x.shape[1])
            # Between steps, never inside one: a chunk is seconds of batch-1 steps.
            if interrupted:
                raise KeyboardInterrupt
        chunk_sums.append(torch.stack(step_sums).sum(0))
    output_losses = torch.stack(chunk_sums).sum(0).cpu().double() / n_samples
    n_steps = -(-n_samples // batch_size)
    kl = kl_term.mean(n_steps) if kl_term is not None else [0.0] * data.X.shape[0]
    return output_losses, kl, n_steps


def batch_orders(n_samples, shuffle, generators, device):
    """Each replica's order of the rows for an epoch, ``(R, n_samples)``."""
    return torch.stack(
        [
            torch.randperm(n_samples, generator=generator, device=device)
            if shuffle
            else torch.arange(n_samples, device=device)
            for generator in generators
        ]
    )


def chunk_batches(models, data, rows, generators, batch_size, n_steps):
    """The :class:`Batch` of each step of a chunk of rows ``(R, m)``, their
    noise drawn at once.  Every tensor is cut into the steps' batches at
    once: views, no copies."""
    draws = [
        model.draw_noise(rows.shape[1], data.X.shape[2], generator)
        for model, generator in zip(models, generators)
    ]
    noise = [stack_replicas(kind) if kind[0].numel() else None for kind in zip(*draws)]
    masks = None if noise[2] is None else models[0].weight_generator.dropout_masks(noise[2])
    replicas = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)
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
    return [Batch(*tensors) for tensors in zip(*columns)]


class KLTerm:
    """The weight KL term of one epoch: its noise, its gradient estimate
    renewed every ``KL_REFRESH_STEPS`` steps (:func:`kl_gradients`) and added
    to every step's gradient, and the estimates' values."""

    def __init__(self, optimizer, weight_generator, kl_weights, n_samples):
        self.optimizer, self.weight_generator = optimizer, weight_generator
        coefficients = torch.tensor(
            kl_weights, dtype=optimizer.flat.dtype, device=optimizer.flat.device
        )
        self.coefficients = coefficients.view(-1, 1, 1) / n_samples
        self.flat_grad, self.grads = optimizer.kl_gradient_buffers()
        self.values = []

    def draw(self, generators, first_step, n_steps):
        """The noise of the refreshes among a chunk's steps."""
        self.refreshes = refresh_steps(first_step, n_steps)
        shape = (len(self.refreshes), KL_SAMPLES, self.weight_generator.noise_dim)
        self.noise = torch.stack(
            [
                torch.randn(shape, generator=g, device=self.optimizer.flat.device)
                for g in generators
            ],
            dim=1,
        )

    def add_gradient(self, step):
        """Add the KL gradient to the step's (``step`` within the chunk)."""
        if step in self.refreshes:
            self.flat_grad.zero_()
            self.values.append(
                kl_gradients(
                    self.optimizer.values,
                    self.grads,
                    self.noise[self.refreshes[step]],
                    self.coefficients,
                    self.weight_generator.shared_outputs,
                    self.weight_generator.negative_slope,
                )
            )
        self.optimizer.flat_grad.add_(self.flat_grad)

    def mean(self, n_steps):
        """Each replica's mean estimate over the epoch of ``n_steps`` steps."""
        n_refreshes = len(refresh_steps(0, n_steps))
        return (torch.stack(self.values).sum(0) / n_refreshes).tolist()


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
