"""The scikit-learn side shared by all estimators: validation, fitting, pickling."""

import dataclasses
import functools
import math
import os
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    Options,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _engine
from ._model import HyperNetwork, PointEstimate, StochasticMLP, layer_shapes, weight_spread
from ._warnings import (
    interrupts_deferred,
    warn_diverged,
    warn_if_far_above,
    warn_interrupted,
    warn_not_converged,
)

_SEED_HIGH = np.iinfo(np.int32).max
#: The paper switches to batches of 512 above 5,000 points in a data set; its
#: splits keep 90 % of them for training.
_PAPER_BATCH_THRESHOLD = 4500
#: ``hyper_activation``: the slope of the hypernetwork's hidden units below 0
#: (0.01 is torch's default leaky slope).
HYPER_ACTIVATION_SLOPES = {"relu": 0.0, "leaky_relu": 0.01}
#: Weight samples behind each epoch's weight-diffusion figures (as in the paper).
DIFFUSION_SAMPLES = 10


def resolve_batch_size(batch_size, n_samples):
    """Turn the ``batch_size`` parameter into a number of rows.

    ``'auto'`` is ``min(32, n_samples)``; ``'paper'`` is the rule of the paper
    (1 for data sets of up to 5,000 points, 512 above), applied to training
    sets that hold 90 % of the data set, as in its splits: 1 up to 4,500
    training rows; an int is clipped to ``n_samples``.
    """
    if batch_size == "auto":
        return min(32, n_samples)
    if batch_size == "paper":
        return 1 if n_samples <= _PAPER_BATCH_THRESHOLD else min(512, n_samples)
    return min(batch_size, n_samples)


#: ``max_iter='auto'``: epochs for this many Adam steps, at most ``AUTO_MAX_EPOCHS``.
AUTO_STEPS = 20_000
#: The paper's own budget (Sec. 4): more epochs only pay for very small data sets.
AUTO_MAX_EPOCHS = 2_000
#: ``n_iter_no_change='auto'``: this fraction of the epoch budget, at least ``AUTO_MIN_PATIENCE``.
AUTO_PATIENCE_FRACTION = 0.1
AUTO_MIN_PATIENCE = 10
#: ``early_stopping='auto'`` holds out validation rows when there are at least this many.
AUTO_MIN_VALIDATION_ROWS = 10


def resolve_max_iter(max_iter, n_samples, batch_size):
    """Turn the ``max_iter`` parameter into a number of epochs.

    ``'auto'`` gives ``AUTO_STEPS`` Adam steps (at ``batch_size`` rows each),
    at most ``AUTO_MAX_EPOCHS`` epochs: small data sets get as many updates as
    large ones, where a fixed number of epochs would give them few.
    """
    if max_iter != "auto":
        return max_iter
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return min(AUTO_MAX_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch))


def resolve_n_iter_no_change(n_iter_no_change, max_epochs):
    """Turn the ``n_iter_no_change`` parameter into a number of epochs.

    ``'auto'`` is a tenth of the epoch budget, at least 10 epochs: the
    training loss is noisy (input noise, weight noise, dropout), and a
    patience of a fixed number of epochs stopped small data sets, whose epochs
    are a few steps each, long before they had converged.
    """
    if n_iter_no_change != "auto":
        return n_iter_no_change
    return max(AUTO_MIN_PATIENCE, math.ceil(AUTO_PATIENCE_FRACTION * max_epochs))


def layer_sizes(sizes, name):
    """The layer sizes of parameter ``name`` as a list of positive ints."""
    sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
    if not all(_is_positive_integer(size) for size in sizes):
        raise ValueError(f"{name} must contain positive integers, got {sizes!r}.")
    return [int(size) for size in sizes]


def _is_positive_integer(value):
    return (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 1
        and int(value) == value
    )


def normalised_weights(sample_weight):
    """``sample_weight`` scaled to mean 1; dividing by the largest weight first
    keeps the sum finite for weights near the float64 limit."""
    scaled = sample_weight / sample_weight.max()
    return scaled * (len(scaled) / scaled.sum())


def check_n_samples(n_samples):
    """Raise a ValueError unless ``n_samples`` is a positive integer."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")


def check_float32_range(X):
    """Raise a ValueError for features that overflow float32, the training precision."""
    largest = float(np.max(np.abs(X))) if X.size else 0.0
    limit = float(np.finfo(np.float32).max)
    if largest > limit:
        raise ValueError(
            f"X holds values of magnitude up to {largest:.3g}, beyond the float32 range "
            f"({limit:.3g}) in which the network trains. Scale the "
            "features, for example with StandardScaler."
        )


def check_input_kinds(X, y):
    """Raise a ValueError for inputs that scikit-learn's validation would
    reject from deep inside numpy: sparse targets, date and time columns."""
    if scipy.sparse.issparse(y):
        raise ValueError("y must be dense, got a sparse matrix: convert it with y.toarray().")
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):
        dated = [str(name) for name, dtype in dtypes.items() if getattr(dtype, "kind", "") in "mM"]
        if dated:
            raise ValueError(
                f"X has datetime or timedelta columns {dated}: convert them to numbers first "
                "(for example days since a reference date)."
            )


def _physical_memory():
    """Bytes of memory of this machine (infinite where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return float("inf")


def check_memory(n_bytes, what):
    """Raise a ValueError, before anything is allocated, where ``what`` needs
    more than this machine's memory."""
    available = _physical_memory()
    if n_bytes > available:
        raise ValueError(
            f"{what} needs {n_bytes / 2**30:.3g} GiB of memory, more than this machine has "
            f"({available / 2**30:.3g} GiB); ask for fewer."
        )


def resolve_device(device):
    """Return a ``torch.device`` for the ``device`` parameter."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but CUDA is not available in this "
            "torch installation; use device='cpu' or device='auto'."
        )
    return torch.device(device)


def _to_tensor(array, dtype, device):
    # torch.tensor copies: inputs may be read-only memmaps, which torch cannot
    # share memory with safely.  It refuses views with negative strides
    # (X[::-1]), which validate_data passes through unchanged.
    return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


def unchanged_on_failure(method):
    """Make a fitting method all or nothing: a call that raises leaves the
    estimator, and the members of an ensemble, with the attributes they had.

    The fitted attributes are replaced, not changed in place, on the way to
    training, so restoring the attribute dictionaries restores the model.
    """

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        owners = [self, *self.__dict__.get("estimators_", [])]
        saved = [(owner, dict(owner.__dict__)) for owner in owners]
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            for owner, attributes in saved:
                owner.__dict__.clear()
                owner.__dict__.update(attributes)
            raise

    return guarded


@dataclasses.dataclass
class _Training:
    """One estimator's part of a training run, ready for the engine."""

    data: _engine.TrainingData
    validation_score: object  # callable, or None without early stopping
    incremental: bool
    settings: dict  # keyword arguments of the engine's train


class BaseStochasticNetwork(BaseEstimator, metaclass=ABCMeta):
    """Base class of all estimators: one training loop, hooks for the task.

    Subclasses define the task (``_loss``, ``_validate_targets``,
    ``_encode_targets``, ``_validation_score``, ``_after_training``) and the
    weight family (``_build_weight_generator``, ``_n_weight_samples``).
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "input_noise": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto", "paper"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "n_members": [Interval(Integral, 1, None, closed="left")],
    }

    # -- hooks -------------------------------------------------------------
    @abstractmethod
    def _validate_targets(self, X, y, reset):
        """Validate X and y together; return them as arrays."""

    @abstractmethod
    def _encode_targets(self, y, sample_weight, first_pass, incremental):
        """Return (training targets as ndarray, number of network outputs)."""

    @abstractmethod
    def _targets_tensor(self, targets, device):
        """Training targets as a tensor."""

    @abstractmethod
    def _validation_score(self, X, y, sample_weight):
        """Score of already validated data (higher is better)."""

    @abstractmethod
    def _loss(self):
        """The training loss: an entry of the engine's loss table."""

    def _after_training(self):
        """Called at the end of fit and partial_fit."""

    def _pool_task_attributes(self, members):
        """Set the task's fitted attributes of an ensemble from its members'."""

    def _share_with_members(self, members):
        """Hand the ensemble's task state to its members before they train."""

    def _ensemble_diagnostics(self, members, first_pass):
        """A per-epoch hook recording diagnostics of the ensemble, or None."""
        return None

    def _kl_weight(self):
        """Weight of the KL term of the weight distribution (0: the paper)."""
        return 0.0

    @abstractmethod
    def _reference_loss(self):
        """Training loss of a model that ignores X (predicts the training mean or
        the class frequencies): a fit far above it has failed."""

    def _weight_independent_outputs(self):
        """Number of trailing network outputs that must not vary with the weight noise."""
        return 0

    @abstractmethod
    def _code_size(self):
        """Length C of the code vector of the weight generator (1 for point estimates)."""

    def _hidden_parameter_count(self):
        """Parameters of the weight generator besides the heads (0 for point estimates)."""
        return 0

    @abstractmethod
    def _build_weight_generator(self, shapes, generator):
        """Return the WeightGenerator of this estimator family."""

    @abstractmethod
    def _n_weight_samples(self):
        """Number of weight samples averaged at prediction."""

    # -- fitting -----------------------------------------------------------
    @unchanged_on_failure
    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Target values: class labels of any type for classifiers (at least
            two classes), real values for regressors (multi-output allowed).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows' losses, normalised to mean 1.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=False)

    def _initialise(self, n_features, n_outputs, device):
        rng = check_random_state(self.random_state)
        self._random_state = rng
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(int(rng.randint(_SEED_HIGH)))
        self._predict_seed = int(rng.randint(_SEED_HIGH))
        init_generator = torch.Generator().manual_seed(int(rng.randint(_SEED_HIGH)))
        hidden = layer_sizes(self.hidden_layer_sizes, "hidden_layer_sizes")
        shapes = layer_shapes(n_features, hidden, n_outputs)
        # Parameters, gradients and Adam's two moments, in float32.
        needed = 16 * (self._code_size() * sum((i + 1) * o for i, o in shapes))
        needed += 16 * self._hidden_parameter_count()
        check_memory(
            needed,
            f"The network of hidden_layer_sizes={hidden} (its parameters and optimiser state)",
        )
        weight_generator = self._build_weight_generator(shapes, init_generator)
        self.network_ = StochasticMLP(weight_generator, self.input_noise).to(device)
        self._optimizer_state = None
        diffusion_noise = self._diffusion_noise(weight_generator, init_generator)
        self._history = _engine.TrainingHistory(
            diffusion_noise=diffusion_noise,
            initial_diffusion=None
            if diffusion_noise is None
            else weight_generator.diffusion(diffusion_noise),
        )

    def _architecture_params(self):
        """Parameters fixed when the network is built: ``{name: value}``."""
        return {
            "hidden_layer_sizes": layer_sizes(self.hidden_layer_sizes, "hidden_layer_sizes"),
            "input_noise": self.input_noise,
            "n_members": self.n_members,
        }

    def _fit(self, X, y, sample_weight, incremental):
        if self.n_members == 1:
            trainings = _prepare_lockstep([self], [(X, y, sample_weight)], incremental)
            _run_lockstep([self], trainings, caller_depth=3)
            _discard(self, ["estimators_", "_ensemble_random_state"])
            return self
        X, y, members, first_pass = self._members_to_train(X, y, incremental)
        trainings = _prepare_lockstep(members, [(X, y, sample_weight)] * len(members), incremental)
        diagnostics = self._ensemble_diagnostics(members, first_pass)
        _run_lockstep(members, trainings, caller_depth=3, on_epoch_end=diagnostics)
        self._publish_ensemble(members)
        return self

    def _members_to_train(self, X, y, incremental):
        """The ensemble's members, new or continued, with this estimator's
        parameters; X and y validated.  Returns ``(X, y, members, first_pass)``.

        Members differ in their seed only and share their validation rows.
        """
        first_pass = self._start_fit(incremental)
        X, y = self._validate_targets(X, y, reset=first_pass)
        params = self.get_params(deep=False)
        del params["n_members"], params["random_state"]
        if first_pass:
            self._ensemble_random_state = check_random_state(self.random_state)
            seeds = self._ensemble_random_state.randint(_SEED_HIGH, size=self.n_members)
            members = [type(self)(**params, random_state=int(seed)) for seed in seeds]
        else:
            members = self.estimators_
        split_seed = int(self._ensemble_random_state.randint(_SEED_HIGH))
        for member in members:
            member.set_params(**params)
            member._shared_split_seed = split_seed
        self._share_with_members(members)
        return X, y, members, first_pass

    def _publish_ensemble(self, members):
        """The fitted attributes of an ensemble, from its trained members."""
        with interrupts_deferred():
            self.estimators_ = members
            self._early_stopping = members[0]._early_stopping
            histories = [member._history for member in members]
            own = getattr(self, "_history", None)
            self._publish_history(
                _engine.TrainingHistory(
                    loss_curve=_mean_by_epoch([h.loss_curve for h in histories]),
                    validation_scores=_mean_by_epoch([h.validation_scores for h in histories]),
                    best_loss=float(np.mean([h.best_loss for h in histories])),
                    best_validation_score=float(
                        np.mean([h.best_validation_score for h in histories])
                    ),
                    n_iter=max(h.n_iter for h in histories),
                    n_samples_seen=max(h.n_samples_seen for h in histories),
                    initial_diffusion=None if own is None else own.initial_diffusion,
                    weight_diffusion=[] if own is None else own.weight_diffusion,
                    diffusion_steps=[] if own is None else own.diffusion_steps,
                )
            )
            self._pool_task_attributes(members)
            _discard(self, ["network_", "coefs_", "intercepts_"])

    def _fitted_members(self):
        """The fitted networks' estimators: the ensemble's members, or itself."""
        return self.estimators_ if self._architecture.get("n_members", 1) > 1 else [self]

    def _start_fit(self, incremental):
        """Whether this call starts from fresh parameters; checks that a
        continued fit keeps the parameters the networks were built with."""
        fitted = hasattr(self, "network_") or hasattr(self, "estimators_")
        first_pass = not fitted or not (self.warm_start or incremental)
        if first_pass:
            self._architecture = self._architecture_params()
        else:
            changed = [
                name
                for name, value in self._architecture_params().items()
                if self._architecture.get(name) != value
            ]
            if changed:
                call = "partial_fit" if incremental else "fit with warm_start=True"
                raise ValueError(
                    f"{call} must keep the parameters the network was built with; "
                    f"{', '.join(changed)} changed since (was "
                    + ", ".join(f"{name}={self._architecture.get(name)!r}" for name in changed)
                    + "). Refit from scratch (warm_start=False) to change them."
                )
        return first_pass

    def _prepare_training(self, X, y, sample_weight, incremental):
        """Validate, encode and split the data, build or check the network;
        return what the engine needs (:class:`_Training`)."""
        first_pass = self._start_fit(incremental)
        X, y = self._validate_targets(X, y, reset=first_pass)
        check_float32_range(X)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True
        )
        if not np.any(sample_weight > 0):
            raise ValueError("sample_weight must contain at least one positive value.")
        targets, n_outputs = self._encode_targets(y, sample_weight, first_pass, incremental)
        device = resolve_device(self.device)
        if first_pass:
            self._initialise(X.shape[1], n_outputs, device)
        else:
            self.network_.to(device)
            if self._generator.device != device:
                state = self._generator.get_state()
                self._generator = torch.Generator(device=device)
                self._generator.set_state(state)

        self._early_stopping = self._uses_early_stopping(targets, incremental)
        if self._early_stopping:
            stratify = targets if targets.ndim == 1 else None
            X, X_val, targets, _, sample_weight, weight_val, y, y_val = train_test_split(
                X,
                targets,
                sample_weight,
                y,
                test_size=self.validation_fraction,
                # An ensemble's members share their validation rows.
                random_state=getattr(self, "_shared_split_seed", self._random_state),
                stratify=stratify,
            )
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            if not np.any(weight_val > 0):
                raise ValueError(
                    f"Early stopping held out {X_val.shape[0]} validation rows, all with "
                    "sample_weight 0, so they cannot score the model; set "
                    "early_stopping=False or give more rows a positive weight."
                )
            X_val_tensor = _to_tensor(X_val, torch.float64, device)

            def validation_score():
                return self._validation_score(X_val_tensor, y_val, weight_val)

            self._history.best_state = None
            self._history.best_validation_score = -np.inf
        else:
            validation_score = None

        data = _engine.TrainingData.single(
            X=_to_tensor(X, torch.float32, device),
            targets=self._targets_tensor(targets, device),
            weights=_to_tensor(normalised_weights(sample_weight), torch.float32, device),
            loss=self._loss(),
        )
        batch_size = resolve_batch_size(self.batch_size, data.n_samples)
        budget = resolve_max_iter(self.max_iter, data.n_samples, batch_size)
        return _Training(
            data=data,
            validation_score=validation_score,
            incremental=incremental,
            settings=dict(
                max_epochs=1 if incremental else budget,
                batch_size=batch_size,
                shuffle=self.shuffle,
                tol=self.tol,
                n_iter_no_change=resolve_n_iter_no_change(self.n_iter_no_change, budget),
                verbose=self.verbose,
                kl_weight=self._kl_weight(),
            ),
        )

    def _optimizer(self, networks, states=None):
        """The engine's Adam over ``networks``, with this estimator's settings."""
        return _engine.FlatOptimizer(
            networks,
            self.learning_rate_init,
            states,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            alpha=self.alpha,
        )

    def _finish_training(self, training, optimizer_state, stopped, caller_depth):
        """Publish the fitted attributes and warn as the training ended.

        ``caller_depth`` is the number of frames between this method and the
        user's call (``_run_lockstep``, ``_fit``, the guard of ``fit`` and
        ``fit``: 4), for the warnings to point there.
        """
        # The fitted attributes are written together: a Ctrl-C in between would
        # leave some of them from an earlier fit.
        with interrupts_deferred():
            self._optimizer_state = optimizer_state
            self._publish_fitted_attributes()
            self._after_training()
        stacklevel = 3 + caller_depth
        warn_if_far_above(self._history.last_output_losses, self._reference_loss(), stacklevel)
        # The automatic budget is meant to be spent: reaching it is no news.
        if not (stopped or training.incremental or self.max_iter == "auto"):
            warn_not_converged(training.settings["max_epochs"], stacklevel)

    def _uses_early_stopping(self, targets, incremental):
        """Whether this call holds out validation rows (see ``early_stopping``)."""
        if incremental:
            return False  # as in scikit-learn's MLP: partial_fit trains on every row
        if self.early_stopping != "auto":
            return bool(self.early_stopping)
        n_validation = math.ceil(self.validation_fraction * len(targets))
        if n_validation < AUTO_MIN_VALIDATION_ROWS:
            return False
        if targets.ndim == 1:
            # A stratified split needs two rows of every class and room for each class.
            counts = np.unique(targets, return_counts=True)[1]
            n_training = len(targets) - n_validation
            return counts.min() >= 2 and min(n_validation, n_training) >= len(counts)
        return True

    def _diffusion_noise(self, weight_generator, generator):
        """Fixed weight noise for the weight-diffusion record, or None."""
        return None

    def _publish_fitted_attributes(self):
        self._publish_history(self._history)

    def _publish_history(self, history):
        """The fitted attributes that a training history holds."""
        if history.initial_diffusion is not None:
            self.weight_diffusion_ = np.array(history.weight_diffusion).reshape(-1, 2)
            self.weight_diffusion_steps_ = np.array(history.diffusion_steps, dtype=np.int64)
            self.initial_weight_diffusion_ = float(history.initial_diffusion[0])
            self.weight_collapse_step_ = history.collapse_step()
        self.n_iter_ = history.n_iter
        self.t_ = history.n_samples_seen
        self.loss_curve_ = list(history.loss_curve)
        if self._early_stopping:
            self.validation_scores_ = list(history.validation_scores)
            self.best_validation_score_ = history.best_validation_score
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = history.best_loss

    # -- prediction --------------------------------------------------------
    def _validate_X_predict(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        check_float32_range(X)
        self._check_predict_params()
        return _to_tensor(X, torch.float64, self._fitted_members()[0].network_.device)

    def _check_predict_params(self):
        """Check the parameters that prediction reads, which may have been set after fit."""

    def _predictive_mean(self, X_tensor, transform=None):
        """Eq. 4 over every member's weight samples, on an already validated
        float64 tensor; returns ndarray."""
        # An ensemble predicts with its own n_predict_samples, which may have
        # been set after fit.
        n_samples = self._n_weight_samples()
        means = [
            member.network_.predictive_mean(X_tensor, n_samples, member._predict_seed, transform)
            .cpu()
            .numpy()
            for member in self._fitted_members()
        ]
        return sum(means) / len(means)

    def _prediction_outputs(self, X_tensor):
        """Network outputs of the prediction's fixed weight samples, every
        member's in turn: ndarray (S, n, n_network_outputs)."""
        outputs = [outputs for _, outputs in self._member_prediction_outputs(X_tensor)]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _member_prediction_outputs(self, X_tensor):
        """``(member, outputs)`` of every member: the network outputs of its
        fixed weight samples, ``n_predict_samples`` of this estimator's each,
        ndarray (S, n, n_network_outputs)."""
        n_samples = self._n_weight_samples()
        members = self._fitted_members()
        n_outputs = members[0].network_.weight_generator.shapes[-1][1]
        check_memory(
            8 * len(members) * n_samples * X_tensor.shape[0] * n_outputs,
            f"The outputs of {len(members) * n_samples} weight samples for "
            f"{X_tensor.shape[0]} rows",
        )
        return [
            (
                member,
                member.network_.sample_outputs(X_tensor, n_samples, member._predict_seed)
                .cpu()
                .numpy(),
            )
            for member in members
        ]

    def _random_outputs(self, X_tensor, n_samples, rng):
        """Network outputs of ``n_samples`` fresh weight samples of this
        network (not an ensemble), seeded from ``rng``: (S, n, n_outputs)."""
        seed = int(rng.randint(_SEED_HIGH))
        return self.network_.sample_outputs(X_tensor, n_samples, seed).cpu().numpy()

    def _pooled_draws(self, draw, n_samples, rng):
        """``n_samples`` draws pooled over the members, each from a member
        picked uniformly at random (the ensemble's implicit distribution).

        ``draw(member, count)`` returns a list of arrays with ``count`` draws
        on their first axis; the result is that list for all draws.
        """
        members = self._fitted_members()
        if len(members) == 1:
            return draw(members[0], n_samples)
        picks = rng.randint(len(members), size=n_samples)
        pooled = None
        for index, member in enumerate(members):
            chosen = np.flatnonzero(picks == index)
            if chosen.size == 0:
                continue
            parts = draw(member, chosen.size)
            if pooled is None:
                pooled = [np.empty((n_samples, *p.shape[1:]), p.dtype) for p in parts]
            for target, part in zip(pooled, parts):
                target[chosen] = part
        return pooled

    # -- persistence -------------------------------------------------------
    def __getstate__(self):
        # No torch object is stored: tensors become numpy arrays, so a model
        # fitted on a GPU loads on a machine without one, and skops.io can
        # store it without pickle.
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "network_" in state:
            state["network_"] = state["network_"].to_arrays()
        if state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = _to_numpy(state["_optimizer_state"])
        if "_history" in state:
            state["_history"] = _to_numpy(dataclasses.asdict(state["_history"]))
        if "_generator" in state:
            state["_generator"] = state["_generator"].get_state().numpy()
        return state

    def __setstate__(self, state):
        if "network_" in state:
            state["network_"] = StochasticMLP.from_arrays(state["network_"])
        if state.get("_optimizer_state") is not None:
            state["_optimizer_state"] = _to_torch(state["_optimizer_state"])
        if "_history" in state:
            state["_history"] = _engine.TrainingHistory(**_to_torch(state["_history"]))
        if "_generator" in state:
            generator = torch.Generator()
            generator.set_state(torch.from_numpy(np.array(state["_generator"])))
            state["_generator"] = generator
        super().__setstate__(state)
        if hasattr(self, "network_"):
            self._check_restored_state()
        if hasattr(self, "estimators_"):
            self._check_restored_members()

    def _check_restored_members(self):
        """Raise a ValueError where an ensemble disagrees with its members."""
        expected = self._architecture.get("n_members", 1)
        found = [getattr(member, "n_features_in_", None) for member in self.estimators_]
        if len(found) != expected or any(n != self.n_features_in_ for n in found):
            raise ValueError(
                f"The saved model is inconsistent: it was fitted with n_members={expected} "
                f"on {self.n_features_in_} features, but holds {len(found)} members taking "
                f"{found} features."
            )

    def _check_restored_state(self):
        """Raise a ValueError where the fitted attributes disagree with the network."""
        shapes = self.network_.weight_generator.shapes
        if shapes[0][0] != self.n_features_in_:
            raise ValueError(
                f"The saved model is inconsistent: n_features_in_ is {self.n_features_in_} "
                f"but its network takes {shapes[0][0]} inputs."
            )
        self._check_outputs(shapes[-1][1])

    def _check_outputs(self, n_network_outputs):
        """Task-specific checks of a restored model against its network's output width."""


def fit_in_lockstep(estimators, X, y):
    """Fit estimators in lockstep: one pass of the training engine for all.

    Each estimator ends as ``estimator.fit(X[i], y[i])`` would leave it (up to
    the rounding of batched matrix products), but the per-step overhead is
    paid once for all of them, which makes many small fits (the splits of a
    benchmark, seeds of an ensemble) several times faster.  Each estimator
    keeps its own random state, noise, stopping rule and validation rows.

    Parameters
    ----------
    estimators : list of estimators
        Of one class, with parameters that differ at most in ``random_state``
        and ``verbose``; ``warm_start`` must be False and ``n_members`` 1.
    X : list of array-like
        Training data of each estimator, all with the same number of rows
        (after any validation split) and features.
    y : list of array-like
        Targets of each estimator.

    Returns
    -------
    estimators : list of estimators
        The fitted estimators.
    """
    if not estimators or not len(estimators) == len(X) == len(y):
        raise ValueError("fit_in_lockstep needs one X and one y per estimator, at least one.")
    first = estimators[0]

    def shared(estimator):
        params = estimator.get_params()
        return {
            name: repr(params[name]) for name in params if name not in {"random_state", "verbose"}
        }

    if any(type(e) is not type(first) or shared(e) != shared(first) for e in estimators):
        raise ValueError(
            "Estimators fitted in lockstep must be of one class with the same parameters "
            "(random_state and verbose may differ)."
        )
    if first.warm_start:
        raise ValueError("fit_in_lockstep fits from scratch: set warm_start=False.")
    if first.n_members != 1:
        raise ValueError(
            "fit_in_lockstep fits single networks: set n_members=1 (an estimator with "
            "n_members > 1 trains its members in lockstep itself)."
        )
    for estimator in estimators:
        estimator._validate_params()
    parts = [(X_part, y_part, None) for X_part, y_part in zip(X, y)]
    trainings = _prepare_lockstep(estimators, parts, incremental=False)
    _run_lockstep(estimators, trainings, caller_depth=1)
    return estimators


def _prepare_lockstep(estimators, parts, incremental):
    """Each estimator's :class:`_Training` for its ``(X, y, sample_weight)``,
    checked to have training sets of one shape."""
    trainings = [
        estimator._prepare_training(X, y, sample_weight, incremental)
        for estimator, (X, y, sample_weight) in zip(estimators, parts)
    ]
    if any(t.data.X.shape != trainings[0].data.X.shape for t in trainings):
        raise ValueError(
            "Estimators fitted in lockstep need training sets of one shape; got "
            + ", ".join(str(tuple(t.data.X.shape[1:])) for t in trainings)
            + "."
        )
    return trainings


def _run_lockstep(estimators, trainings, caller_depth, on_epoch_end=None):
    """Train the estimators' networks in one pass of the engine and publish
    each one's fitted attributes.

    ``caller_depth`` is the number of frames between this function and the
    user's call, for warnings to point there.
    """
    if len(trainings) == 1:
        data = trainings[0].data
    else:
        data = _engine.TrainingData(
            *(
                torch.cat([getattr(t.data, name) for t in trainings])
                for name in ("X", "targets", "weights")
            ),
            loss=trainings[0].data.loss,
        )
    networks = [estimator.network_ for estimator in estimators]
    optimizer = estimators[0]._optimizer(
        networks, [estimator._optimizer_state for estimator in estimators]
    )
    settings = dict(trainings[0].settings)
    hooks = _engine.standard_hooks(
        max_epochs=settings["max_epochs"],
        tol=settings.pop("tol"),
        n_iter_no_change=settings.pop("n_iter_no_change"),
        validation_scores=[t.validation_score for t in trainings],
        verbose=settings.pop("verbose"),
        on_epoch_end=on_epoch_end,
    )
    end = _engine.train(
        networks,
        optimizer,
        data,
        [estimator._history for estimator in estimators],
        generators=[estimator._generator for estimator in estimators],
        hooks=hooks,
        **settings,
    )
    stacklevel = 3 + caller_depth
    for diverged in end.diverged:
        if diverged is not None:
            warn_diverged(*diverged, stacklevel)
    if end.interrupted:
        warn_interrupted(end.epochs, stacklevel)
    for replica, (estimator, training) in enumerate(zip(estimators, trainings)):
        estimator._finish_training(
            training, optimizer.replica_state(replica), end.stopped[replica], caller_depth + 1
        )


def _mean_by_epoch(curves):
    """Per epoch, the mean of the curves that reach it (members that stopped
    earlier no longer count)."""
    length = max(len(curve) for curve in curves)
    return [float(np.mean([c[e] for c in curves if len(c) > e])) for e in range(length)]


def _discard(estimator, names):
    """Remove attributes left from an earlier fit of another kind."""
    for name in names:
        estimator.__dict__.pop(name, None)


def _to_numpy(obj):
    """Replace the tensors in nested dicts and lists by numpy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return {key: _to_numpy(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_numpy(value) for value in obj]
    return obj


def _to_torch(obj):
    """Inverse of :func:`_to_numpy` for parameter and optimiser states."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        return {key: _to_torch(value) for key, value in obj.items()}
    return obj


def _store_params(estimator, arguments):
    """Set every constructor parameter from ``locals()`` of ``__init__``."""
    for name in estimator._get_param_names():
        setattr(estimator, name, arguments[name])


class HyperNetworkFamily(BaseStochasticNetwork):
    """Weights drawn from a hypernetwork (the paper's method)."""

    _parameter_constraints: dict = {
        **BaseStochasticNetwork._parameter_constraints,
        "noise_dim": [Interval(Integral, 1, None, closed="left")],
        "hyper_hidden_layer_sizes": ["array-like"],
        "hyper_dropout": [Interval(Real, 0, 1, closed="left")],
        "hyper_activation": [StrOptions(set(HYPER_ACTIVATION_SLOPES))],
        "n_predict_samples": [Interval(Integral, 1, None, closed="left")],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
    }

    def _n_weight_samples(self):
        return self.n_predict_samples

    def _check_predict_params(self):
        validate_parameter_constraints(
            {"n_predict_samples": self._parameter_constraints["n_predict_samples"]},
            {"n_predict_samples": self.n_predict_samples},
            caller_name=type(self).__name__,
        )
        self._check_sample_count(self.n_predict_samples, "n_predict_samples")

    def _check_sample_count(self, n_samples, what):
        """Refuse a number of weight samples whose noise and codes (float64,
        all at once) do not fit in memory."""
        sizes = self._hyper_sizes()
        check_memory(8 * n_samples * (sum(sizes) + 1), f"{what}={n_samples} weight samples")

    def _hyper_sizes(self):
        """Layer sizes of the hypernetwork from the noise to its last hidden layer."""
        return [
            self.noise_dim,
            *layer_sizes(self.hyper_hidden_layer_sizes, "hyper_hidden_layer_sizes"),
        ]

    def _hidden_parameter_count(self):
        sizes = self._hyper_sizes()
        return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))

    def _code_size(self):
        return self._hyper_sizes()[-1] + 1

    def _architecture_params(self):
        return {
            **super()._architecture_params(),
            "noise_dim": self.noise_dim,
            "hyper_hidden_layer_sizes": layer_sizes(
                self.hyper_hidden_layer_sizes, "hyper_hidden_layer_sizes"
            ),
            "hyper_dropout": self.hyper_dropout,
            "hyper_activation": self.hyper_activation,
        }

    def _kl_weight(self):
        return self.kl_weight

    def _diffusion_noise(self, weight_generator, generator):
        return torch.randn((DIFFUSION_SAMPLES, weight_generator.noise_dim), generator=generator)

    def _ensemble_diagnostics(self, members, first_pass):
        # The spread of the members' weight samples pooled: the ensemble's own
        # weight distribution, which does not collapse while members differ.
        # A member that stopped counts with the weights it stopped with.
        histories = [member._history for member in members]
        generators = [member.network_.weight_generator for member in members]
        latest = [g.diffusion_weights(h.diffusion_noise) for g, h in zip(generators, histories)]
        if first_pass:
            self._history = _engine.TrainingHistory(
                initial_diffusion=weight_spread(torch.cat(latest))
            )

        def record(recorded):
            for replica in recorded:
                latest[replica] = generators[replica].diffusion_weights(
                    histories[replica].diffusion_noise
                )
            self._history.weight_diffusion.append(weight_spread(torch.cat(latest)))
            self._history.diffusion_steps.append(max(h.n_steps for h in histories))

        return record

    def sample_weights(self, n_samples=1, random_state=None):
        """Draw main networks from the hypernetwork.

        With ``n_members > 1`` each draw comes from a member picked uniformly
        at random.

        Parameters
        ----------
        n_samples : int, default=1
            Number of networks to draw.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws; None gives fresh ones.

        Returns
        -------
        coefs : list of ndarray of shape (n_samples, fan_in, fan_out)
            Weight matrices, layer by layer, in the layout of
            ``MLPRegressor.coefs_`` with a leading sample axis.
        intercepts : list of ndarray of shape (n_samples, fan_out)
            Bias vectors, in the layout of ``MLPRegressor.intercepts_``.
            Regressors' networks predict standardised targets:
            ``(y - target_mean_) / target_scale_``.
        """
        check_is_fitted(self)
        check_n_samples(n_samples)
        self._check_sample_count(n_samples, "sample_weights")
        n_parameters = self._fitted_members()[0].network_.weight_generator.n_main_parameters
        check_memory(8 * n_samples * n_parameters, f"sample_weights({n_samples})")
        rng = check_random_state(random_state)
        layers = self._pooled_draws(
            lambda member, count: member._draw_weights(count, rng), n_samples, rng
        )
        return [layer[:, :-1, :] for layer in layers], [layer[:, -1, :] for layer in layers]

    def _draw_weights(self, n_samples, rng):
        """``n_samples`` weight sets of this network, seeded from ``rng``: one
        ``(n_samples, fan_in + 1, fan_out)`` array per layer."""
        generator_ = self.network_.weight_generator
        seed = int(rng.randint(_SEED_HIGH))
        torch_generator = torch.Generator(device=self.network_.device).manual_seed(seed)
        with torch.no_grad():
            weight_noise = torch.randn(
                (n_samples, generator_.noise_dim),
                generator=torch_generator,
                device=self.network_.device,
            )
            codes = generator_.codes(weight_noise, weight_noise.new_empty(0))
            return [layer.cpu().numpy() for layer in generator_.materialise(codes, torch.float64)]

    def _build_weight_generator(self, shapes, generator):
        return HyperNetwork(
            shapes,
            noise_dim=self.noise_dim,
            hidden_layer_sizes=layer_sizes(
                self.hyper_hidden_layer_sizes, "hyper_hidden_layer_sizes"
            ),
            dropout=self.hyper_dropout,
            generator=generator,
            shared_outputs=self._weight_independent_outputs(),
            negative_slope=HYPER_ACTIVATION_SLOPES[self.hyper_activation],
        )


class PointEstimateFamily(BaseStochasticNetwork):
    """Point-estimate weights: the plain "SGD" baseline of the paper."""

    def _n_weight_samples(self):
        return 1

    def _code_size(self):
        return 1

    def _build_weight_generator(self, shapes, generator):
        return PointEstimate(shapes, generator)

    def _publish_fitted_attributes(self):
        super()._publish_fitted_attributes()
        layers = [
            head[0].detach().cpu().double().numpy()
            for head in self.network_.weight_generator.heads
        ]
        self.coefs_ = [layer[:-1].copy() for layer in layers]
        self.intercepts_ = [layer[-1].copy() for layer in layers]
