"""The loss table: one class per loss, its value and gradient with respect
to the network's outputs."""

import math

import torch


class Loss:
    """One entry of the loss table: what training minimises and prediction reads.

    Adding a loss means adding one subclass to :data:`LOSSES`.
    """

    name = None
    #: Whether the network outputs the noise of its own predictions (a
    #: likelihood with a scale), so that no noise is estimated after fit.
    learns_noise = False

    def n_outputs(self, n_targets):
        """Network outputs for ``n_targets`` targets (classes for cross-entropy)."""
        return n_targets

    def weight_independent_outputs(self, n_targets):
        """Trailing network outputs that must not vary with the weight noise."""
        return 0

    def reference_loss(self, n_targets):
        """The loss of a model that ignores X (it predicts the standardised
        targets' mean, or every class as likely): a fit far above it failed."""
        raise NotImplementedError

    def predictive(self, outputs):
        """A regression loss's means and noise variances (None: not learned)
        of the network's ``outputs``."""
        raise NotImplementedError

    def gradient(self, outputs, targets, row_weights):
        """Loss of one batch and its gradient.

        ``outputs`` has shape ``(..., n, n_outputs)`` (leading dimensions:
        replicas), ``row_weights`` ``(..., n, 1)``.  Returns the weighted loss
        summed over the n rows, per output (per target for the Gaussian
        likelihood, one entry for cross-entropy; the batch's loss is their
        mean over outputs divided by the rows), and the gradient of that
        batch loss with respect to ``outputs``.
        """
        raise NotImplementedError

    def kl_scale(self, last_output_losses):
        """Factor that puts the weight KL term on the scale of this loss as a
        negative log-likelihood per row (see :func:`kl_scale`)."""
        return 1.0


class SquaredError(Loss):
    name = "squared_error"

    def reference_loss(self, n_targets):
        return 1.0

    def predictive(self, outputs):
        return outputs, None

    def gradient(self, outputs, targets, row_weights):
        diff = outputs - targets
        weighted_diff = diff * row_weights
        loss_sums = (weighted_diff * diff).sum(-2)
        return loss_sums, weighted_diff.mul_(2.0 / (diff.shape[-2] * diff.shape[-1]))

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
        log_proba = torch.log_softmax(outputs, -1)
        column = targets.unsqueeze(-1)
        loss_sums = -(log_proba.gather(-1, column) * row_weights).sum(-2)
        delta = torch.exp(log_proba)
        delta.scatter_add_(-1, column, -torch.ones_like(row_weights))
        return loss_sums, delta.mul_(row_weights / outputs.shape[-2])

    @staticmethod
    def transform(outputs):
        """Class probabilities of the logits."""
        return torch.softmax(outputs, dim=-1)

    def reference_loss(self, n_targets):
        return math.log(n_targets)


class GaussianNLL(Loss):
    """Negative log-likelihood of a Gaussian whose mean and log-variance the
    network outputs (the constant ``log(2 pi) / 2`` left out)."""

    name = "gaussian_nll"
    learns_noise = True
    #: The log-variance outputs are clipped to ``[-bound, bound]``, in training
    #: (no gradient beyond) and prediction alike.
    log_variance_bound = 15.0

    def n_outputs(self, n_targets):
        return 2 * n_targets

    def weight_independent_outputs(self, n_targets):
        # The log-variances: one draw of the weights must not set the noise.
        return n_targets

    def reference_loss(self, n_targets):
        # The targets' mean with their (standardised) variance 1: the
        # log-variance term is 0, the squared term 1/2.
        return 0.5

    def predictive(self, outputs):
        means, log_variances = self.split(outputs)
        return means, torch.exp(log_variances)

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
        weight_scale = row_weights / (diff.shape[-2] * diff.shape[-1])
        loss_sums = 0.5 * ((clipped + scaled) * row_weights).sum(-2)
        grad_log_variance = (1.0 - scaled).mul_(0.5 * weight_scale)
        # Clipping passes no gradient outside the bound.
        grad_log_variance.mul_(clipped == outputs[..., means.shape[-1] :])
        grad_means = diff.mul_(precision).mul_(weight_scale)
        return loss_sums, torch.cat([grad_means, grad_log_variance], -1)


SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL = SquaredError(), CrossEntropy(), GaussianNLL()
#: The loss table, by the estimators' names.
LOSSES = {loss.name: loss for loss in (SQUARED_ERROR, CROSS_ENTROPY, GAUSSIAN_NLL)}
