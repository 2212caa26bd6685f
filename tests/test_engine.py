"""The fast training engine equals the straightforward autograd formulation."""

import copy

import numpy as np
import pytest
import torch

from skhypernet import _engine
from skhypernet._model import HyperNetwork, PointEstimate, StochasticMLP, layer_shapes

from .reference import row_loss, training_outputs

# (5 -> 12) widens; (12 -> 2) narrows enough to contract inputs first from 5
# rows on: both contraction orders are exercised.
SHAPES = layer_shapes(5, [12], 2)


def test_contraction_order_rule():
    assert not _engine.contracts_inputs_first(1, 13, 2)
    assert _engine.contracts_inputs_first(9, 13, 2)
    assert not _engine.contracts_inputs_first(9, 6, 12)
    assert not _engine.contracts_inputs_first(256, 785, 400)  # MNIST first layer
    assert _engine.contracts_inputs_first(256, 401, 10)  # MNIST last layer


def build(
    family,
    input_noise=0.5,
    hidden=(6, 4),
    dropout=0.5,
    shapes=SHAPES,
    shared_outputs=0,
    seed=0,
    negative_slope=0.0,
):
    generator = torch.Generator().manual_seed(seed)
    if family == "hyper":
        weights = HyperNetwork(
            shapes,
            3,
            list(hidden),
            dropout,
            generator,
            shared_outputs=shared_outputs,
            negative_slope=negative_slope,
        )
    else:
        weights = PointEstimate(shapes, generator)
    return StochasticMLP(weights, input_noise)


LOSSES = [_engine.SQUARED_ERROR, _engine.CROSS_ENTROPY, _engine.GAUSSIAN_NLL]


def batch(n, loss, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SHAPES[0][0], generator=generator)
    if loss == _engine.CROSS_ENTROPY:
        y = torch.randint(0, SHAPES[-1][1], (n,), generator=generator)
    elif loss == _engine.GAUSSIAN_NLL:  # outputs: one mean and one log-variance
        y = torch.randn(n, SHAPES[-1][1] // 2, generator=generator)
    else:
        y = torch.randn(n, SHAPES[-1][1], generator=generator)
    return x, y, torch.rand(n, generator=generator) + 0.5


CASES = [
    ("hyper", 0.5, (6, 4), 0.5),
    ("hyper", 0.0, (6,), 0.0),
    ("hyper", 0.3, (), 0.5),
    ("point", 0.5, (), 0.0),
    ("point", 0.0, (), 0.0),
]


@pytest.mark.parametrize("family, input_noise, hidden, dropout", CASES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", [1, 9])
def test_hand_written_gradients_equal_autograd(family, input_noise, hidden, dropout, loss, n):
    check_gradients(build(family, input_noise, hidden, dropout), loss, n)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", [1, 9])
def test_hand_written_gradients_of_leaky_hidden_units_equal_autograd(loss, n):
    # A slope far above hyper_activation's 0.01, so that a wrong one shows.
    model = build("hyper", negative_slope=0.2)
    check_gradients(model, loss, n)
    # Some hidden units are below 0 for some rows: the slope is exercised.
    codes = model.weight_generator.codes(torch.randn(50, 3), torch.empty(0))
    assert torch.any(codes[:, :-1] < 0)


@pytest.mark.parametrize("bias", [-20.0, 20.0])
def test_gaussian_gradients_beyond_the_log_variance_bound(bias):
    # Every row's log-variance output is far outside the clipping bound: the
    # engine must clip where the reference (and prediction) does.
    model = build("point", 0.0)
    with torch.no_grad():
        model.weight_generator.heads[-1][0, :-1, 1] = 0.0
        model.weight_generator.heads[-1][0, -1, 1] = bias
    check_gradients(model, _engine.GAUSSIAN_NLL, 9)


def one_replica_batch(model, x, y, w, noise):
    """The engine's Batch of one step of one model: a leading replica
    dimension of 1 on every tensor."""
    masks = model.weight_generator.dropout_masks(noise.dropout_uniform)
    return _engine.Batch(
        x[None],
        y[None],
        w[None, :, None],
        noise.input_noise[None] if noise.input_noise.numel() else None,
        noise.weight_noise[None] if noise.weight_noise.numel() else None,
        None if masks is None else [mask[None] for mask in masks],
    )


def check_gradients(model, loss, n):
    """Hand-written gradients and loss of one batch against autograd's."""
    x, y, w = batch(n, loss)
    noise = model.draw_noise(n, x.shape[1], torch.Generator().manual_seed(2))
    mean_loss = (w * row_loss(training_outputs(model, x, noise), y, loss)).mean()
    mean_loss.backward()
    expected = [p.grad.clone() for p in _engine.Parameters.of(model).tensors()]

    optimizer = _engine.FlatOptimizer([model], 1e-3)
    with torch.no_grad():
        total = _engine.batch_gradients(
            optimizer.values,
            optimizer.grads,
            loss,
            one_replica_batch(model, x, y, w, noise),
            negative_slope=model.weight_generator.negative_slope,
        )
    torch.testing.assert_close(total.mean() / n, mean_loss.detach())
    computed = [
        block[0].view(want.shape) for block, want in zip(optimizer.grads.tensors(), expected)
    ]
    assert len(optimizer.grads.tensors()) == len(expected)
    for got, want in zip(computed, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class AbsoluteError(_engine.Loss):
    """A loss the package does not have: adding one is this class alone."""

    name = "absolute_error"

    def gradient(self, outputs, targets, row_weights):
        diff = outputs - targets
        loss_sums = (diff.abs() * row_weights).sum(-2)
        return loss_sums, torch.sign(diff) * row_weights / (diff.shape[-2] * diff.shape[-1])


@pytest.mark.parametrize("family", ["hyper", "point"])
def test_a_new_loss_is_one_class(family):
    model = build(family)
    x, y, w = batch(9, _engine.SQUARED_ERROR)
    noise = model.draw_noise(9, x.shape[1], torch.Generator().manual_seed(2))
    mean_loss = (w * (training_outputs(model, x, noise) - y).abs().mean(dim=1)).mean()
    mean_loss.backward()
    expected = [p.grad.clone() for p in _engine.Parameters.of(model).tensors()]
    optimizer = _engine.FlatOptimizer([model], 1e-3)
    with torch.no_grad():
        total = _engine.batch_gradients(
            optimizer.values,
            optimizer.grads,
            AbsoluteError(),
            one_replica_batch(model, x, y, w, noise),
        )
    torch.testing.assert_close(total.mean() / 9, mean_loss.detach())
    for block, want in zip(optimizer.grads.tensors(), expected):
        torch.testing.assert_close(block[0].view(want.shape), want, rtol=1e-5, atol=1e-6)


def reference_kl(model, weight_noise):
    """The weight KL estimate of ``_engine.kl_gradients``, with autograd."""
    generator = model.weight_generator
    codes = generator.codes(weight_noise, weight_noise.new_empty(0))
    total = 0.0
    for index, head in enumerate(generator.heads):
        fan_in = head.shape[1] - 1
        if index == len(generator.heads) - 1 and generator.shared_outputs:
            head = head[:, :, : -generator.shared_outputs]
        weights = torch.tensordot(codes, head, dims=1).flatten(1)
        variance = weights.var(dim=0) + 1e-12
        mean = weights.mean(dim=0)
        ratio = fan_in * variance
        total = total + 0.5 * (ratio + fan_in * mean.square() - 1.0 - torch.log(ratio)).sum()
    return total


@pytest.mark.parametrize("shared_outputs, negative_slope", [(0, 0.0), (1, 0.0), (0, 0.2)])
def test_kl_gradients_equal_autograd(shared_outputs, negative_slope):
    model = build("hyper", shared_outputs=shared_outputs, negative_slope=negative_slope)
    weight_noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))
    reference_kl(model, weight_noise).backward()
    expected = [p.grad.clone() for p in _engine.Parameters.of(model).tensors()[1:]]
    optimizer = _engine.FlatOptimizer([model], 1e-3)
    optimizer.flat_grad.fill_(1.0)  # the KL gradient is added to what is there
    with torch.no_grad():
        value = _engine.kl_gradients(
            optimizer.values,
            optimizer.grads,
            weight_noise[None],
            torch.full((1, 1, 1), 0.5),
            shared_outputs,
            negative_slope,
        )
    torch.testing.assert_close(value[0], reference_kl(model, weight_noise).detach())
    # The first tensor is the input-noise scale, which the KL term leaves alone.
    blocks = optimizer.grads.tensors()[1:]
    for got, want in zip(
        (block[0].view(want.shape) for block, want in zip(blocks, expected)), expected
    ):
        torch.testing.assert_close(got, 1.0 + 0.5 * want, rtol=1e-4, atol=1e-4)


def reference_epoch(
    model, optimizer, data, batch_size, generator, kl_weight=0.0, masks=None, penalised=None
):
    """The straightforward loop: autograd and torch.optim.Adam.

    ``penalised`` maps parameters to ``alpha`` times their L2-penalty masks:
    each batch's objective gains ``0.5 * sum(alpha * p**2) / batch rows``, as
    in scikit-learn's MLP.

    Returns the mean data loss per output and the mean KL estimate per step.
    """
    X, targets, weights, n_samples = data.X[0], data.targets[0], data.weights[0], data.n_samples
    order = torch.randperm(n_samples, generator=generator)
    noise = model.draw_noise(n_samples, X.shape[1], generator)
    n_steps = -(-n_samples // batch_size)
    refresh = _engine.epochs.KL_REFRESH_STEPS
    n_refreshes = -(-n_steps // refresh)
    if kl_weight:
        kl_noise = torch.randn((n_refreshes, _engine.KL_SAMPLES, 3), generator=generator)
    total, kl_total = 0.0, 0.0
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for step, start in enumerate(range(0, n_samples, batch_size)):
        rows = slice(start, start + batch_size)
        index = order[rows]
        outputs = training_outputs(model, X[index], noise.rows(rows))
        if data.loss == _engine.CROSS_ENTROPY:
            losses = row_loss(outputs, targets[index], data.loss)[:, None]
        elif data.loss == _engine.GAUSSIAN_NLL:
            means, log_variances = _engine.GAUSSIAN_NLL.split(outputs)
            scaled = (targets[index] - means).square() * torch.exp(-log_variances)
            losses = 0.5 * (log_variances + scaled)
        else:
            losses = (outputs - targets[index]).square()
        losses = weights[index, None] * losses
        objective = losses.mean(dim=1).mean()
        if kl_weight and step % refresh == 0:
            # The KL gradient of every refresh-th step serves the steps up to the next.
            kl = reference_kl(model, kl_noise[step // refresh])
            kl_total += float(kl.detach())
            kl_grads = torch.autograd.grad(
                kl_weight / n_samples * kl, parameters, allow_unused=True
            )
        for parameter, alpha in (penalised or {}).items():
            objective = objective + 0.5 * (alpha * parameter.square()).sum() / len(index)
        optimizer.zero_grad()
        objective.backward()
        if kl_weight:
            for parameter, kl_grad in zip(parameters, kl_grads):
                if kl_grad is not None:
                    parameter.grad += kl_grad
        for parameter, mask in (masks or {}).items():
            parameter.grad *= mask
        optimizer.step()
        total = total + losses.detach().sum(dim=0)
    return total.double() / n_samples, kl_total / n_refreshes


EPOCH_CASES = [
    ("hyper", _engine.SQUARED_ERROR, 0.0),
    ("hyper", _engine.CROSS_ENTROPY, 0.0),
    ("hyper", _engine.GAUSSIAN_NLL, 0.0),
    ("hyper", _engine.SQUARED_ERROR, 0.5),
    ("hyper", _engine.GAUSSIAN_NLL, 0.5),
    ("hyper-leaky", _engine.SQUARED_ERROR, 0.5),
    ("point", _engine.SQUARED_ERROR, 0.0),
    ("point", _engine.CROSS_ENTROPY, 0.0),
    ("point", _engine.GAUSSIAN_NLL, 0.0),
]


# With the KL term, its gradient estimated every step, every other step or
# once an epoch of 5 steps (reused in between).
EPOCH_REFRESH_CASES = [
    (*case, refresh)
    for case in EPOCH_CASES
    for refresh in ([1, 2, _engine.KL_REFRESH_STEPS] if case[2] else [_engine.KL_REFRESH_STEPS])
]


@pytest.mark.parametrize("family, loss, kl_weight, kl_refresh", EPOCH_REFRESH_CASES)
def test_training_epochs_equal_autograd_and_torch_adam(
    family, loss, kl_weight, kl_refresh, monkeypatch
):
    monkeypatch.setattr(_engine.epochs, "KL_REFRESH_STEPS", kl_refresh)
    # With the Gaussian likelihood the log-variance output is weight-independent.
    shared = 1 if loss == _engine.GAUSSIAN_NLL and family == "hyper" else 0
    if family == "hyper-leaky":
        model = build("hyper", negative_slope=0.2)
    else:
        model = build(family, shared_outputs=shared)
    reference = copy.deepcopy(model)
    masks = matching_masks(model, reference, model.weight_generator.frozen_masks())
    assert bool(masks) == bool(shared)
    x, y, w = batch(40, loss)
    data = _engine.TrainingData.single(x, y, w, loss)
    optimizer = _engine.FlatOptimizer([model], 1e-2)
    torch_adam = torch.optim.Adam(reference.parameters(), lr=1e-2)
    fast_generator = torch.Generator().manual_seed(5)
    reference_generator = torch.Generator().manual_seed(5)
    for _ in range(3):
        with torch.no_grad():
            losses, kl, n_steps = _engine.run_epoch(
                [model], optimizer, data, 8, True, [fast_generator], [kl_weight]
            )
        expected, expected_kl = reference_epoch(
            reference, torch_adam, data, 8, reference_generator, kl_weight, masks
        )
        assert n_steps == 5
        torch.testing.assert_close(losses[0], expected, rtol=1e-5, atol=1e-6)
        assert kl[0] == pytest.approx(expected_kl, rel=1e-5)
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if shared:
        frozen = model.weight_generator.heads[-1][:-1, :, -shared:]
        assert torch.count_nonzero(frozen) == 0


@pytest.mark.parametrize("n_steps, chunk_steps, refresh", [(5, 5, 8), (23, 4, 3), (23, 6, 1)])
def test_kl_refresh_steps_of_chunks_make_up_the_epoch(n_steps, chunk_steps, refresh, monkeypatch):
    # The engine draws an epoch's noise in chunks of whole batches.
    monkeypatch.setattr(_engine.epochs, "KL_REFRESH_STEPS", refresh)
    seen = []
    for first in range(0, n_steps, chunk_steps):
        steps = _engine.epochs.refresh_steps(first, min(chunk_steps, n_steps - first))
        assert list(steps.values()) == list(range(len(steps)))
        seen += [first + step for step in steps]
    assert seen == list(range(0, n_steps, refresh))
    assert len(_engine.epochs.refresh_steps(0, n_steps)) == len(seen)


def matching_masks(model, reference, masks):
    """``masks`` of ``model``'s parameters keyed by ``reference``'s namesakes."""
    named = dict(reference.named_parameters())
    return {named[name]: masks[p] for name, p in model.named_parameters() if p in masks}


@pytest.mark.parametrize("family", ["hyper", "point"])
def test_adam_settings_and_l2_penalty_equal_torch_adam(family):
    model = build(family)
    reference = copy.deepcopy(model)
    alpha = 0.3
    penalised = matching_masks(model, reference, model.weight_generator.penalised_masks())
    assert len(penalised) == len(model.weight_generator.heads)
    penalised = {p: alpha * mask for p, mask in penalised.items()}
    x, y, w = batch(40, _engine.SQUARED_ERROR)
    data = _engine.TrainingData.single(x, y, w, _engine.SQUARED_ERROR)
    settings = dict(lr=1e-2, betas=(0.7, 0.95), eps=1e-3)
    optimizer = _engine.FlatOptimizer(
        [model], 1e-2, beta_1=0.7, beta_2=0.95, epsilon=1e-3, alpha=alpha
    )
    torch_adam = torch.optim.Adam(reference.parameters(), **settings)
    fast_generator = torch.Generator().manual_seed(5)
    reference_generator = torch.Generator().manual_seed(5)
    for _ in range(3):
        # Batches of 12 rows end on one of 4: the penalty is divided by the rows.
        with torch.no_grad():
            losses, _, _ = _engine.run_epoch([model], optimizer, data, 12, True, [fast_generator])
        expected, _ = reference_epoch(
            reference, torch_adam, data, 12, reference_generator, penalised=penalised
        )
        torch.testing.assert_close(losses[0], expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # Biases are not penalised: the penalty's gradient is zero on their rows.
    for mask in model.weight_generator.penalised_masks().values():
        assert torch.all(mask[:, -1, :] == 0) and torch.all(mask[:, :-1, :] == 1)


LOCKSTEP_CASES = [
    ("hyper", _engine.SQUARED_ERROR, 0.5),
    ("hyper", _engine.CROSS_ENTROPY, 0.0),
    ("hyper", _engine.GAUSSIAN_NLL, 0.0),
    ("point", _engine.SQUARED_ERROR, 0.0),
]


def separate_and_lockstep(family, loss, n_replicas=3, **options):
    """Models of different seeds on different rows, built twice: to be trained
    one by one and in lockstep; with the data of each replica."""
    shared = 1 if loss == _engine.GAUSSIAN_NLL and family == "hyper" else 0
    alone = [build(family, shared_outputs=shared, seed=seed) for seed in range(n_replicas)]
    together = copy.deepcopy(alone)
    batches = [batch(40, loss, seed=10 + seed) for seed in range(n_replicas)]
    return alone, together, batches


@pytest.mark.parametrize("family, loss, kl_weight", LOCKSTEP_CASES)
def test_lockstep_replicas_train_as_they_would_alone(family, loss, kl_weight):
    alone, together, batches = separate_and_lockstep(family, loss)
    kl_weights = [kl_weight * (1 + r) for r in range(len(alone))]
    expected = []
    for model, (x, y, w), seed, weight in zip(alone, batches, range(5, 8), kl_weights):
        optimizer = _engine.FlatOptimizer([model], 1e-2, alpha=0.1)
        generator = torch.Generator().manual_seed(seed)
        data = _engine.TrainingData.single(x, y, w, loss)
        with torch.no_grad():
            for _ in range(2):
                losses, kl, _ = _engine.run_epoch(
                    [model], optimizer, data, 8, True, [generator], [weight]
                )
        expected.append((losses[0], kl[0]))
    optimizer = _engine.FlatOptimizer(together, 1e-2, alpha=0.1)
    generators = [torch.Generator().manual_seed(seed) for seed in range(5, 8)]
    data = _engine.TrainingData(*(torch.stack(parts) for parts in zip(*batches)), loss)
    with torch.no_grad():
        for _ in range(2):
            losses, kl, n_steps = _engine.run_epoch(
                together, optimizer, data, 8, True, generators, kl_weights
            )
    assert n_steps == 5
    for replica, (want_losses, want_kl) in enumerate(expected):
        torch.testing.assert_close(losses[replica], want_losses, rtol=1e-5, atol=1e-6)
        assert kl[replica] == pytest.approx(want_kl, rel=1e-5, abs=1e-9)
        for got, want in zip(together[replica].parameters(), alone[replica].parameters()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_lockstep_replica_that_diverges_leaves_the_others_alone():
    alone, together, batches = separate_and_lockstep("hyper", _engine.SQUARED_ERROR, 2)
    x, y, w = batches[1]
    batches[1] = (x, torch.full_like(y, float("inf")), w)
    initial = copy.deepcopy(together[1].state_dict())
    data = _engine.TrainingData(
        *(torch.stack(parts) for parts in zip(*batches)), _engine.SQUARED_ERROR
    )
    histories = [_engine.TrainingHistory(), _engine.TrainingHistory()]
    settings = dict(max_epochs=3, batch_size=8, shuffle=True)

    def hooks():
        return _engine.standard_hooks(
            max_epochs=3, tol=0.0, n_iter_no_change=np.inf, validation_scores=[None, None]
        )

    end = _engine.train(
        together,
        _engine.FlatOptimizer(together, 1e-2),
        data,
        histories,
        generators=[torch.Generator().manual_seed(s) for s in (5, 6)],
        hooks=hooks(),
        **settings,
    )
    assert end.stopped == [False, True]
    assert end.diverged[0] is None and end.diverged[1][0] == 1
    assert not end.interrupted
    assert histories[0].n_iter == 3 and histories[1].n_iter == 0
    for name, value in together[1].state_dict().items():
        torch.testing.assert_close(value, initial[name])
    single = _engine.TrainingData.single(*batches[0], _engine.SQUARED_ERROR)
    _engine.train(
        alone[:1],
        _engine.FlatOptimizer(alone[:1], 1e-2),
        single,
        [_engine.TrainingHistory()],
        generators=[torch.Generator().manual_seed(5)],
        hooks=hooks(),
        **settings,
    )
    for got, want in zip(together[0].parameters(), alone[0].parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_flat_optimizer_shares_memory_with_the_model():
    model = build("hyper")
    optimizer = _engine.FlatOptimizer([model], 1e-3)
    assert sum(p.numel() for p in model.parameters()) == optimizer.flat.numel()
    optimizer.flat.add_(1.0)
    assert all(p.data_ptr() >= optimizer.flat.data_ptr() for p in model.parameters())
    before = model.weight_generator.heads[0].detach().clone()
    optimizer.flat.zero_()
    assert torch.count_nonzero(model.weight_generator.heads[0]) == 0
    assert torch.count_nonzero(before) > 0


def test_no_private_torch_api():
    import pathlib
    import re

    package = pathlib.Path(_engine.__file__).parents[1]
    private = re.compile(r"\btorch(\.\w+)*\._(?!_)\w")
    uses = [
        f"{path.name}: {line.strip()}"
        for path in package.rglob("*.py")
        for line in path.read_text().splitlines()
        if private.search(line)
    ]
    assert not uses


def test_adam_runs_without_a_fused_kernel(monkeypatch):
    # Torch before 2.4 has no fused Adam on the CPU: the plain update is the same.
    model = build("hyper")
    reference = copy.deepcopy(model)
    x, y, w = batch(40, _engine.SQUARED_ERROR)
    data = _engine.TrainingData.single(x, y, w, _engine.SQUARED_ERROR)
    results = []
    for fused, network in ((True, model), (False, reference)):
        monkeypatch.setitem(_engine.optimizer._fused_adam, "cpu", fused)
        optimizer = _engine.FlatOptimizer([network], 1e-2)
        with torch.no_grad():
            _engine.run_epoch(
                [network], optimizer, data, 8, True, [torch.Generator().manual_seed(1)]
            )
        results.append(optimizer.flat.clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_denormal_moments_are_flushed_after_every_epoch(monkeypatch):
    # torch.set_flush_denormal acts on the calling thread only: the moments
    # that torch's other threads update decay into denormals where gradients
    # stay zero (dead units), and denormal arithmetic is many times slower.
    model = build("hyper")
    x, y, w = batch(16, _engine.SQUARED_ERROR)
    optimizer = _engine.FlatOptimizer([model], 1e-2)
    tiny = torch.finfo(torch.float32).tiny
    torch.set_flush_denormal(False)  # the default, as every test expects
    try:
        with torch.no_grad():
            optimizer.exp_avg[::2] = tiny / 10
            optimizer.exp_avg_sq[1::2] = -tiny / 10
            optimizer.exp_avg[1] = tiny
        assert int((optimizer.exp_avg != 0).sum()) > 1
        optimizer.flush_denormals()
        assert int((optimizer.exp_avg != 0).sum()) == 1  # the normal number stays
        assert int((optimizer.exp_avg_sq != 0).sum()) == 0
    finally:
        torch.set_flush_denormal(False)
    calls = []
    monkeypatch.setattr(_engine.FlatOptimizer, "flush_denormals", lambda self: calls.append(self))
    _engine.train(
        [model],
        optimizer,
        _engine.TrainingData.single(x, y, w, _engine.SQUARED_ERROR),
        [_engine.TrainingHistory()],
        max_epochs=3,
        batch_size=8,
        shuffle=False,
        generators=[torch.Generator().manual_seed(0)],
    )
    assert calls == [optimizer] * 3


@pytest.mark.parametrize("user_setting", [False, True])
def test_flush_denormals_is_restored(user_setting):
    tiny = torch.tensor([1e-39])
    torch.set_flush_denormal(user_setting)
    try:
        with _engine.flushed_denormals():
            assert (tiny * 1.0).item() == 0.0
        assert ((tiny * 1.0).item() == 0.0) == user_setting
    finally:
        torch.set_flush_denormal(False)


def test_small_steps_run_on_one_thread_and_the_count_is_restored():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _engine.threads_for(1e3):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with _engine.threads_for(1e9):
            assert torch.get_num_threads() == 2
        # Many small lockstep replicas: Adam's update of their parameters gains.
        with _engine.threads_for(1e3, n_parameters=10**6):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_hook_sees_every_epoch_and_can_stop_a_replica():
    class StopAfterTwo(_engine.Hook):
        def __init__(self):
            self.seen = []

        def replica_epoch_end(self, run, replica):
            self.seen.append((run.epoch, replica, run.histories[replica].n_iter))
            if run.histories[replica].n_iter == 2:
                run.stopped[replica] = True

    model = build("hyper")
    x, y, w = batch(40, _engine.SQUARED_ERROR)
    history = _engine.TrainingHistory()
    hooks = _engine.standard_hooks(
        max_epochs=5, tol=0.0, n_iter_no_change=np.inf, validation_scores=[None]
    )
    stop = StopAfterTwo()
    end = _engine.train(
        [model],
        _engine.FlatOptimizer([model], 1e-3),
        _engine.TrainingData.single(x, y, w, _engine.SQUARED_ERROR),
        [history],
        max_epochs=5,
        batch_size=8,
        shuffle=True,
        generators=[torch.Generator().manual_seed(0)],
        hooks=[*hooks, stop],
    )
    # After the history has recorded the epoch; nothing runs once it stopped.
    assert stop.seen == [(0, 0, 1), (1, 0, 2)]
    assert end.stopped == [True] and history.n_iter == 2 and end.epochs == 2
