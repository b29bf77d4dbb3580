"""Test helpers: assert that TensorFlow computes the right gradients.

    class LogSumExpTest(GradientCheckMixin, tf.test.TestCase):

        def test_gradient(self):
            self.assertGradientsCorrect(stable_logsumexp, [tf.random.normal([4, 5])])

On failure the message is the gradient check's report: which input, which element (in the
input's shape and the output's), the analytic and the numeric value.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tf_backprop import gradcheck


class GradientCheckMixin:
    """Mixin for `tf.test.TestCase` (or any `unittest.TestCase`) adding gradient assertions."""

    def assertGradientsCorrect(  # noqa: N802 - unittest's naming
        self, fn: Callable[..., tf.Tensor], inputs, msg: str | None = None, **kwargs
    ) -> gradcheck.Report:
        """Fails unless `gradcheck.gradcheck(fn, inputs, **kwargs)` passes; returns the report.

        kwargs: mode, eps, atol, rtol, seed, directions, samples, names (see `gradcheck`).
        """
        report = gradcheck.gradcheck(fn, inputs, **kwargs)
        if not report.passed:
            self.fail(
                self._formatMessage(msg, "gradients disagree with finite differences\n" + report.to_text())
            )
        return report

    def assertModelGradientsCorrect(  # noqa: N802 - unittest's naming
        self, model, x, y, loss_fn: Callable, msg: str | None = None, **kwargs
    ) -> gradcheck.Report:
        """Fails unless `gradcheck.check_model(model, x, y, loss_fn, **kwargs)` passes."""
        report = gradcheck.check_model(model, x, y, loss_fn, **kwargs)
        if not report.passed:
            self.fail(
                self._formatMessage(msg, "gradients disagree with finite differences\n" + report.to_text())
            )
        return report
