"""The training loop shared by every estimator.

The engine knows nothing about scikit-learn: it takes a torch module whose
forward pass maps ``(x, generator)`` to outputs, a per-row loss, tensors of
inputs, targets and normalised sample weights, and runs epochs of Adam on
shuffled mini-batches, keeping the loss history and the stopping rule of
scikit-learn's MLP.
"""

import copy
import time
import warnings
from dataclasses import dataclass, field

import torch
from sklearn.exceptions import ConvergenceWarning


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

    @property
    def n_samples(self):
        return self.X.shape[0]


def make_optimizer(model, learning_rate, state=None):
    """Adam over all parameters of ``model``, optionally resumed from ``state``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    if state is not None:
        optimizer.load_state_dict(state)
    return optimizer


def run_epoch(model, optimizer, data, row_loss, batch_size, shuffle, generator):
    """One pass over ``data`` in mini-batches; returns the mean weighted loss."""
    n_samples = data.n_samples
    device = data.X.device
    if shuffle:
        order = torch.randperm(n_samples, generator=generator, device=device)
    else:
        order = torch.arange(n_samples, device=device)
    total = torch.zeros((), device=device)
    for start in range(0, n_samples, batch_size):
        index = order[start : start + batch_size]
        outputs = model(data.X[index], generator)
        weighted = data.weights[index] * row_loss(outputs, data.targets[index])
        loss = weighted.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += weighted.detach().sum()
    return float(total) / n_samples


def train(
    model,
    optimizer,
    data,
    history,
    *,
    row_loss,
    max_epochs,
    batch_size,
    shuffle,
    tol,
    n_iter_no_change,
    generator,
    validation_score=None,
    verbose=0,
):
    """Run up to ``max_epochs`` epochs, stopping as scikit-learn's MLP does.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(x, generator)`` to outputs; trained in place.
    optimizer : torch.optim.Optimizer
    data : TrainingData
    history : TrainingHistory
        Updated in place.
    row_loss : callable
        ``row_loss(outputs, targets)`` returns one loss per row.
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

    Returns
    -------
    stopped : bool
        Whether the stopping rule ended training before ``max_epochs``.
    """
    start_time = time.perf_counter()
    stopped = False
    try:
        for _ in range(max_epochs):
            model.train()
            loss = run_epoch(
                model, optimizer, data, row_loss, batch_size, shuffle, generator
            )
            model.eval()
            score = validation_score() if validation_score is not None else None
            history.n_samples_seen += data.n_samples
            history.record(loss, score, tol, model)
            if verbose:
                message = f"Epoch {history.n_iter}, loss = {loss:.8f}"
                if score is not None:
                    message += f", validation score = {score:.6f}"
                elapsed = time.perf_counter() - start_time
                print(f"{message}, elapsed = {elapsed:.2f}s")
            if history.no_improvement_count > n_iter_no_change:
                stopped = True
                if verbose:
                    measure = "Validation score" if score is not None else "Training loss"
                    print(
                        f"{measure} did not improve more than tol={tol:f} for "
                        f"{n_iter_no_change} consecutive epochs. Stopping."
                    )
                break
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")
        stopped = True
    finally:
        model.eval()
    if validation_score is not None and history.best_state is not None:
        model.load_state_dict(history.best_state)
    return stopped


def warn_not_converged(max_epochs):
    warnings.warn(
        f"Stochastic optimizer: maximum iterations ({max_epochs}) reached and the "
        "optimization hasn't converged yet.",
        ConvergenceWarning,
    )
