"""The warnings a fit gives its user, as scikit-learn's estimators give them.

The training engine reports what happened (a replica diverged, Ctrl-C
stopped the run); the estimators turn that into these warnings, pointed at
the user's call by ``stacklevel``.
"""

import contextlib
import math
import warnings

from sklearn.exceptions import ConvergenceWarning

from ._engine import interrupts_collected

#: A last epoch's loss this many times that of a model ignoring X is a failed fit.
FAILED_FIT_FACTOR = 10.0


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


def warn_interrupted(n_epochs, stacklevel):
    warnings.warn(
        "Training interrupted by user: the model keeps the parameters of the last "
        f"finished epoch ({n_epochs} in all).",
        stacklevel=stacklevel,
    )


def warn_if_far_above(output_losses, reference, stacklevel):
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


def warn_not_converged(max_epochs, stacklevel):
    warnings.warn(
        f"Stochastic optimizer: maximum iterations ({max_epochs}) reached and the "
        "optimization hasn't converged yet.",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )


#: ``interrupts_deferred``'s warning is attributed this many frames up, through
#: contextlib's exit into the estimator's code.
_DEFERRED_STACKLEVEL = 4


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
            stacklevel=_DEFERRED_STACKLEVEL,
        )
