"""The training loop: epochs, then hooks for divergence rollback, the
history, diagnostics, stopping and progress."""

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .epochs import run_epoch
from .runtime import flushed_denormals, interrupts_collected, step_flops, threads_for


def kl_scale(loss, history):
    """Factor that puts the KL term on the scale of the loss as a likelihood.

    Cross-entropy and the Gaussian likelihood are negative log-likelihoods
    per row, so a variational objective adds ``KL / n_rows``: the factor is 1.
    For the squared error, :meth:`SquaredError.kl_scale`.
    """
    return loss.kl_scale(history.last_output_losses)


class TrainingEnd(NamedTuple):
    """How a run of :func:`train` ended, per replica.

    ``stopped``: the stopping rule or a divergence ended its training before
    ``max_epochs``.  ``diverged``: ``(epoch, loss)`` of the epoch in which its
    parameters or loss stopped being finite (then rolled back), or None.
    ``interrupted``: Ctrl-C ended the run after ``epochs`` finished epochs
    (the first replica's count).
    """

    stopped: list
    diverged: list
    interrupted: bool
    epochs: int


@dataclass
class TrainingRun:
    """The state of one run of :func:`train` that its hooks read and change."""

    models: list
    optimizer: object
    data: object
    histories: list
    stopped: list
    diverged: list
    #: The last finished epoch's parameters while an epoch runs (for rollback).
    snapshot: torch.Tensor | None = None
    epoch: int = 0
    #: Of the epoch just run: each replica's loss (data and KL terms), its
    #: per-output data loss, the number of steps, whether its parameters are
    #: finite; which replicas recorded it, their validation scores, and what
    #: the stopping rule says.
    losses: list = field(default_factory=list)
    output_losses: torch.Tensor | None = None
    n_steps: int = 0
    finite: list = field(default_factory=list)
    recorded: list = field(default_factory=list)
    scores: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)


class Hook:
    """Something :func:`train` does after every epoch (skorch's callbacks).

    ``replica_epoch_end`` runs for each replica still training, hook after
    hook; a hook that stops the replica (``run.stopped[replica] = True``)
    ends that replica's epoch before the later hooks.  ``epoch_end`` runs
    once all replicas are done, ``train_end`` once the run is over (also
    after Ctrl-C).
    """

    def replica_epoch_end(self, run, replica):
        pass

    def epoch_end(self, run):
        pass

    def train_end(self, run):
        pass


class DivergenceRollback(Hook):
    """A replica whose loss or parameters stopped being finite gets the
    parameters of the epoch before back, a fresh Adam state, and stops."""

    def replica_epoch_end(self, run, replica):
        loss = run.losses[replica]
        if math.isfinite(loss) and run.finite[replica]:
            return
        run.optimizer.restore(
            run.snapshot,
            reset_moments=True,
            replica=replica if len(run.models) > 1 else None,
        )
        run.diverged[replica] = (run.histories[replica].n_iter + 1, loss)
        run.stopped[replica] = True


class HistoryRecord(Hook):
    """The epoch's loss and validation score enter the replica's history; at
    the end, a replica with validation scores gets its best epoch's
    parameters back."""

    def __init__(self, validation_scores, tol):
        self.validation_scores, self.tol = validation_scores, tol

    def replica_epoch_end(self, run, replica):
        validation_score = self.validation_scores[replica]
        score = validation_score() if validation_score is not None else None
        history = run.histories[replica]
        history.n_samples_seen += run.data.n_samples
        history.n_steps += run.n_steps
        history.last_output_losses = run.output_losses[replica].tolist()
        history.record(run.losses[replica], score, self.tol, run.models[replica])
        run.recorded.append(replica)
        if score is not None:
            run.scores[replica] = score

    def train_end(self, run):
        for model, history, score in zip(run.models, run.histories, self.validation_scores):
            if score is not None and history.best_state is not None:
                model.load_state_dict(history.best_state)


class WeightDiffusion(Hook):
    """The spread of the generated weights (Figure 2), where the history asks for it."""

    def replica_epoch_end(self, run, replica):
        history = run.histories[replica]
        if history.diffusion_noise is not None:
            generator = run.models[replica].weight_generator
            history.weight_diffusion.append(generator.diffusion(history.diffusion_noise))
            history.diffusion_steps.append(history.n_steps)


class StoppingRule(Hook):
    """scikit-learn's MLP rule: stop after more than ``n_iter_no_change``
    epochs without an improvement of ``tol``."""

    def __init__(self, tol, n_iter_no_change):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change

    def replica_epoch_end(self, run, replica):
        history = run.histories[replica]
        if history.no_improvement_count > self.n_iter_no_change:
            run.stopped[replica] = True
            measure = "Validation score" if replica in run.scores else "Training loss"
            run.messages.append(
                f"{measure} did not improve more than tol={self.tol:f} for "
                f"{self.n_iter_no_change} consecutive epochs. Stopping."
            )


class EpochCallback(Hook):
    """``callback(recorded)`` after every epoch that some replica recorded."""

    def __init__(self, callback):
        self.callback = callback

    def epoch_end(self, run):
        if run.recorded:
            self.callback(run.recorded)


class Progress(Hook):
    """A line per epoch (verbose=1) or a live bar (verbose>=2), and why replicas stopped."""

    def __init__(self, verbose, max_epochs):
        self.verbose, self.max_epochs = verbose, max_epochs
        self.start_time = time.perf_counter()

    def epoch_end(self, run):
        recorded = [run.losses[replica] for replica in run.recorded]
        if recorded:
            report_epoch(
                self.verbose,
                run.epoch,
                self.max_epochs,
                run.histories[0].n_iter,
                sum(recorded) / len(recorded),
                sum(run.scores.values()) / len(run.scores) if run.scores else None,
                time.perf_counter() - self.start_time,
            )
        if run.messages and self.verbose > 1:
            sys.stderr.write("\n")
        for message in run.messages:
            print(message)


def standard_hooks(
    *, max_epochs, tol, n_iter_no_change, validation_scores, verbose=0, on_epoch_end=None
):
    """The hooks of an estimator's fit, in order: divergence rollback, the
    history, the weight diffusion, the stopping rule, ``on_epoch_end``
    (called with the replicas that recorded the epoch) and progress."""
    hooks = [
        DivergenceRollback(),
        HistoryRecord(validation_scores, tol),
        WeightDiffusion(),
        StoppingRule(tol, n_iter_no_change),
    ]
    if on_epoch_end is not None:
        hooks.append(EpochCallback(on_epoch_end))
    if verbose:
        hooks.append(Progress(verbose, max_epochs))
    return hooks


def train(
    models,
    optimizer,
    data,
    histories,
    *,
    max_epochs,
    batch_size,
    shuffle,
    generators,
    hooks=(),
    kl_weight=0.0,
):
    """Up to ``max_epochs`` epochs of R models of one architecture in lockstep
    (a fit is R = 1), ``hooks`` after each; a :class:`TrainingEnd`.

    Each model keeps its own history and randomness (``generators``) and
    ends with the parameters it would have had trained alone, up to rounding.
    ``kl_weight`` weighs the KL term (see :func:`kl_scale`).
    """
    n_replicas = len(models)
    run = TrainingRun(
        models, optimizer, data, histories, [False] * n_replicas, [None] * n_replicas
    )
    # Replicas that stop still take the lockstep's steps: their parameters are kept aside.
    stopped_states = [None] * n_replicas
    interrupted_run = False
    try:
        with (
            flushed_denormals(),
            threads_for(n_replicas * step_flops(models[0], batch_size), optimizer.flat.numel()),
            torch.no_grad(),
            interrupts_collected() as interrupted,
        ):
            for run.epoch in range(max_epochs):
                if interrupted:
                    raise KeyboardInterrupt
                run.snapshot = optimizer.snapshot()
                run_hooked_epoch(
                    run, hooks, batch_size, shuffle, generators, kl_weight, interrupted
                )
                run.snapshot = None  # the epoch is finished: nothing to roll back
                if all(run.stopped):
                    break
                keep_stopped_states(run, stopped_states)
            if interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if run.snapshot is not None:
            optimizer.restore(run.snapshot, reset_moments=False)
        interrupted_run, run.stopped = True, [True] * n_replicas
    for model, state in zip(models, stopped_states):
        if state is not None:
            model.load_state_dict(state)
    for hook in hooks:
        hook.train_end(run)
    return TrainingEnd(run.stopped, run.diverged, interrupted_run, histories[0].n_iter)


def keep_stopped_states(run, states):
    """A copy of the parameters of each replica that stopped since the last call."""
    for replica, model in enumerate(run.models):
        if run.stopped[replica] and states[replica] is None:
            states[replica] = copy.deepcopy(model.state_dict())


def run_hooked_epoch(run, hooks, batch_size, shuffle, generators, kl_weight, interrupted):
    """One epoch of every replica still training, then the hooks."""
    kl_weights = [kl_weight * kl_scale(run.data.loss, h) for h in run.histories]
    run.output_losses, kls, run.n_steps = run_epoch(
        run.models,
        run.optimizer,
        run.data,
        batch_size,
        shuffle,
        generators,
        kl_weights,
        interrupted,
    )
    run.optimizer.flush_denormals()
    # A last update can make parameters NaN while the epoch's loss was finite:
    # that epoch diverged too.
    run.finite = run.optimizer.finite_replicas()
    run.losses = [
        float(losses.mean()) + weight * kl / run.data.n_samples
        for losses, weight, kl in zip(run.output_losses, kl_weights, kls)
    ]
    run.recorded, run.scores, run.messages = [], {}, []
    for replica in range(len(run.models)):
        for hook in hooks:
            if run.stopped[replica]:
                break
            hook.replica_epoch_end(run, replica)
    for hook in hooks:
        hook.epoch_end(run)


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
