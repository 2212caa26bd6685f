"""Parameter and attribute documentation shared by the public estimators.

Class docstrings contain ``{name}`` placeholders for the blocks below, filled
by :func:`fill_doc`, so a parameter is described once for all estimators.
"""

HYPERNET_PARAMETERS = """\
    noise_dim : int, default=10
        Dimension of the Gaussian noise ``eps`` fed to the hypernetwork.  It is
        multiplied by a learned softplus scale, initially 1.

    hyper_hidden_layer_sizes : array-like of int, default=(100, 50)
        Hidden layers of the hypernetwork (see ``hyper_activation``).  Its
        linear output layer has one unit per weight and bias of the main
        network.

    hyper_dropout : float, default=0.5
        Dropout probability of the hypernetwork's hidden units during
        training (the paper uses 0.5).

    hyper_activation : {'relu', 'leaky_relu'}, default='relu'
        Activation of the hypernetwork's hidden units.  'relu' is the
        paper's.  Beyond the paper: 'leaky_relu' (slope 0.01 below 0) keeps
        every unit's gradient alive, so that with ``kl_weight > 0`` the
        weight distribution cannot end on units that are off for every
        noise draw, where ReLU leaves a spread of exactly 0.

    kl_weight : float, default=0.0
        Beyond the paper: weight of a KL term that keeps a distribution over
        the weights.  0 is the paper's objective (eq. 3), under which the
        weight distribution shrinks to a single network within about 10,000
        Adam steps (see ``weight_collapse_step_``).  A positive value adds,
        at every step, ``kl_weight`` times an estimate of
        ``KL(q(w) || N(0, 1 / fan_in))`` divided by the number of training
        rows, as in a variational objective (for the squared error, times
        ``2 sigma^2``, with ``sigma^2`` the last epoch's loss).  The KL is
        estimated from 32 weight draws with Gaussian marginals: prior term
        minus the marginals' entropy; the estimate's gradient is renewed
        every 16 steps and reused in between.  0.1 was chosen by
        cross-validation on training rows of four UCI data sets
        (``python -m skhypernet.benchmarks kl-weight``); it makes an epoch
        about 1.2 times as long at batch size 1 and 1.1 times at 32.

    n_predict_samples : int, default=100
        Number S of weight samples whose outputs are averaged at prediction
        (eq. 4 of the paper).  The samples are fixed at fit time, so
        predictions are repeatable and depend on the other rows of X only
        through float64 rounding (relative differences of order 1e-16).
"""

MAIN_PARAMETERS = """\
    hidden_layer_sizes : array-like of int, default=(50,)
        Hidden ReLU layers of the main network.
"""

TRAINING_PARAMETERS = """\
    input_noise : float, default=0.5
        Initial scale of the Gaussian noise added to the inputs during
        training; the scale is learned end to end through a softplus.  0
        disables input noise.

    batch_size : int, 'auto' or 'paper', default='auto'
        Rows per mini-batch.  'auto' is ``min(32, n_samples)``: a fit on 1,000
        rows takes a few seconds and scores well.  'paper' is the rule of the
        paper: 1 for data sets of up to 5,000 points and 512 above, applied
        to training sets holding 90 % of the data set as in the paper's
        splits, so 1 up to 4,500 training rows (much slower).
        Larger values are clipped to the number of rows.

    learning_rate_init : float, default=1e-3
        Learning rate of the Adam optimiser.

    alpha : float, default=0.0
        Strength of the L2 penalty, as in scikit-learn's MLP: every step adds
        ``alpha * W / batch rows`` to the gradient of the parameters ``W``
        that produce the main network's weights (not its biases): the weights
        themselves for the baselines, the corresponding rows of the
        hypernetwork's output layer for the hypernetwork estimators.  The
        paper uses none (0; scikit-learn's default is 1e-4).  The loss here
        is the mean squared error of standardised targets, not half of it as
        in MLPRegressor, so the same ``alpha`` weighs half as much against it.

    beta_1 : float, default=0.9
        Exponential decay rate of Adam's first-moment estimates, in [0, 1).

    beta_2 : float, default=0.999
        Exponential decay rate of Adam's second-moment estimates, in [0, 1).

    epsilon : float, default=1e-8
        Adam's numerical-stability term.

    max_iter : int or 'auto', default='auto'
        Maximum number of epochs of one call to ``fit``.  'auto' gives 20,000
        Adam steps, at most 2,000 epochs (the paper's budget): about 690
        epochs for 700 training rows at batch size 32, 16 for 40,000.  A fixed number
        of epochs gives small data sets few updates (200 epochs of 300 rows
        are 2,000 steps), and this method needs many: on validation rows of
        the UCI Energy data, 200 epochs left RMSE 2.3, 20,000 steps 0.48.  A fit
        that reaches an int ``max_iter`` warns (ConvergenceWarning); the
        'auto' budget is meant to be used up and does not.

    shuffle : bool, default=True
        Whether to shuffle the rows before every epoch.

    tol : float, default=1e-4
        Tolerance of the stopping rule: training stops when the loss (or the
        validation score with ``early_stopping``) has not improved by at
        least ``tol`` for more than ``n_iter_no_change`` consecutive epochs.

    early_stopping : bool or 'auto', default='auto'
        Set aside ``validation_fraction`` of the training data, score it
        after every epoch, stop when the score has not improved by ``tol``
        for ``n_iter_no_change`` epochs and keep the parameters with the best
        score.  'auto' does so when the validation rows number at least 10
        (and, for classifiers, a stratified split is possible): long training
        overfits small noisy data sets (diabetes: validation RMSE 77 after
        20,000 steps, 55 with early stopping).  ``partial_fit`` ignores it and
        trains on all rows, as scikit-learn's MLP does.

    validation_fraction : float, default=0.1
        Fraction of the training data used for early stopping.

    n_iter_no_change : int or 'auto', default='auto'
        Number of epochs without improvement that the stopping rule allows.
        'auto' is a tenth of the epoch budget (of ``max_iter``), at least 10:
        the training loss is deliberately noisy (input noise, weight noise,
        dropout), and a fixed patience of a few epochs of a few steps each
        stopped small data sets long before they had converged.

    warm_start : bool, default=False
        Reuse the fitted parameters and optimiser state as the starting point
        of the next call to ``fit``.  The parameters the network was built
        with (layer sizes, ``noise_dim``, ``hyper_dropout``, ``input_noise``,
        ``loss``) cannot change then: ``fit`` and ``partial_fit`` raise a
        ValueError that names them.

    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order, noise, dropout, the validation
        split and the prediction samples.  An int makes ``fit`` and
        ``predict`` bit-for-bit repeatable on the CPU; the global random
        states of numpy and torch are not touched.

    verbose : int, default=0
        1 prints one line per epoch (loss, validation score, elapsed time) as
        scikit-learn's MLP does; 2 shows a live progress bar with the time
        left on standard error.

    device : {'cpu', 'cuda', 'auto'}, default='cpu'
        Where to train.  'auto' picks CUDA when available.  Saved models hold
        no torch objects (parameters are stored as numpy arrays), so a model
        fitted on a GPU loads on a machine without one.

    n_members : int, default=1
        Beyond the paper: the number of networks of an ensemble.  Members
        differ in their seed only (initialisation, noise, batch order), share
        their validation rows, are trained together in one pass of the
        training engine, and each keeps its own best epoch.  Predictions pool
        every member's weight samples with equal weight: for the baselines
        a deep ensemble (Lakshminarayanan et al., 2017), for the hypernetwork
        a mixture of hypernetworks, still one weight distribution (the noise
        picks a member and its weights), which cannot collapse to one network
        while the members differ.  The members are ``estimators_``.
"""

COMMON_ATTRIBUTES = """\
    network_ : torch.nn.Module
        The fitted torch model (weight generator and input noise); with
        ``n_members=1`` only.

    estimators_ : list of estimators
        With ``n_members > 1``: the members, fitted estimators of this class
        with ``n_members=1``.  The attributes below are then the ensemble's:
        ``n_iter_`` and ``t_`` the largest of the members', the loss and
        validation records per epoch the mean over the members still
        training, the best ones the members' mean.

    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string column names.

    n_iter_ : int
        Number of epochs run since the parameters were initialised.

    t_ : int
        Number of training rows seen since the parameters were initialised.

    loss_curve_ : list of float
        Mean training loss of every epoch (squared error on standardised
        targets for regression, cross-entropy for classification).

    best_loss_ : float or None
        Lowest training loss; None with ``early_stopping``.

    validation_scores_ : list of float or None
        Validation score of every epoch with ``early_stopping``, else None.

    best_validation_score_ : float or None
        Best validation score with ``early_stopping``, else None.
"""

_PARAMETERS_HEADER = "    Parameters\n    ----------\n"
_ATTRIBUTES_HEADER = "    Attributes\n    ----------\n"

LOSS_PARAMETER = """\
    loss : {'squared_error', 'gaussian_nll'}, default='squared_error'
        'squared_error' is the paper's loss; the observation noise of
        ``predict(return_std=True)`` and ``sample_y`` is then
        ``noise_variance_``.  'gaussian_nll' makes the network output a mean
        and a log-variance per target and minimises the Gaussian negative
        log-likelihood, so the noise is learned and may depend on x (its
        log-variance, in standardised units, is clipped to [-15, 15]).  With a
        hypernetwork, the log-variance outputs' last-layer weights do not vary
        with the noise ``eps`` (they come from the hypernetwork's constant
        part), so a single weight draw cannot set a row's noise.
"""

REGRESSOR_ATTRIBUTES = """
    n_outputs_ : int
        Number of targets.

    target_mean_, target_scale_ : ndarray of shape (`n_outputs_`,)
        Training mean and standard deviation of the targets; the network
        predicts ``(y - target_mean_) / target_scale_``.

    noise_variance_ : ndarray of shape (`n_outputs_`,) or None
        With ``loss='squared_error'``, the observation noise in target units
        (for an ensemble, the mean of the members', each of whose weight
        samples carry their member's own):
        with ``early_stopping``, the mean squared residual of the held-out
        validation rows, cross-fitted on their two halves (each half measures
        the epoch that the other half scores best, so that choosing the epoch
        does not make the estimate optimistic); otherwise the last epoch's
        training loss (free to compute, but optimistic where the network fits
        its training rows closely).  None with ``loss='gaussian_nll'``.
"""

HYPERNET_ATTRIBUTES = """\
    weight_diffusion_ : ndarray of shape (`n_iter_`, 2)
        Per epoch, from 10 fixed noise draws of the hypernetwork (dropout off),
        the mean over the P main-network parameters of their standard
        deviation across the draws, and the standard deviation of those
        deviations: how the weight distribution shrinks (Figure 2 of the
        paper).  For an ensemble, over the 10 draws of every member pooled
        (a member that stopped counts with the weights it stopped with).

    weight_diffusion_steps_ : ndarray of shape (`n_iter_`,)
        Adam steps taken at the end of each epoch of ``weight_diffusion_``.

    initial_weight_diffusion_ : float
        The mean spread of ``weight_diffusion_`` at initialisation.

    weight_collapse_step_ : int or None
        Adam step at the end of the first epoch whose mean weight spread fell
        below 1 % of ``initial_weight_diffusion_``: from there on the
        hypernetwork is, in effect, a single network.  None while it has not.
"""

BASELINE_ATTRIBUTES = """\
    coefs_ : list of ndarray of shape (fan_in, fan_out)
        Weight matrices of the main network, layer by layer, as in
        ``MLPRegressor.coefs_`` (with ``n_members > 1``, each member's).
        Regressors' networks predict standardised targets,
        ``(y - target_mean_) / target_scale_``.

    intercepts_ : list of ndarray of shape (fan_out,)
        Bias vectors of the main network, layer by layer.
"""

BLOCKS = {
    "hypernet_attributes": HYPERNET_ATTRIBUTES,
    "hypernet_parameters": _PARAMETERS_HEADER
    + "\n".join([MAIN_PARAMETERS, HYPERNET_PARAMETERS, TRAINING_PARAMETERS]),
    "baseline_parameters": _PARAMETERS_HEADER + "\n".join([MAIN_PARAMETERS, TRAINING_PARAMETERS]),
    "loss_parameter": LOSS_PARAMETER,
    "baseline_attributes": BASELINE_ATTRIBUTES,
    "regressor_attributes": _ATTRIBUTES_HEADER + COMMON_ATTRIBUTES + REGRESSOR_ATTRIBUTES,
    "classifier_attributes": _ATTRIBUTES_HEADER
    + COMMON_ATTRIBUTES
    + "\n    classes_ : ndarray of shape (n_classes,)\n        Class labels.\n",
}


def fill_doc(cls):
    """Class decorator replacing ``{block}`` placeholders in the docstring."""
    doc = cls.__doc__
    for name, block in BLOCKS.items():
        doc = doc.replace("    {" + name + "}\n", block)
    cls.__doc__ = doc
    return cls
