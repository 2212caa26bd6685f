"""The training loop: epochs, stopping, divergence rollback and progress."""

import copy
import math
import sys
import time
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from .epochs import run_epoch
from .runtime import (
    USER_STACKLEVEL,
    flushed_denormals,
    interrupts_collected,
    step_flops,
    threads_for,
)


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
