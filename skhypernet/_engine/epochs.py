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
