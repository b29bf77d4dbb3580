"""Test helpers: assert that TensorFlow computes the right gradients.

    class LogSumExpTest(GradientCheckMixin, tf.test.TestCase):

        def test_gradient(self):
            self.assertGradientsCorrect(stable_logsumexp, [tf.random.normal([4, 5])])

On failure the message is the gradient check's report: which input, which element (in the
input's shape and the output's), the analytic and the numeric value.  An INCONCLUSIVE check
(too little could be checked, e.g. too many kinks that could not be examined) fails too.

Second order and forward mode: pass order=2 and/or check_forward=True, as to `gradcheck`.
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

        kwargs: mode, eps, atol, rtol, seed, directions, samples, names, order, check_forward
        (see `gradcheck`).
        """
        return self._assertPassed(gradcheck.gradcheck(fn, inputs, **kwargs), msg)

    def assertModelGradientsCorrect(  # noqa: N802 - unittest's naming
        self, model, x, y, loss_fn: Callable | str, msg: str | None = None, **kwargs
    ) -> gradcheck.Report:
        """Fails unless `gradcheck.check_model(model, x, y, loss_fn, **kwargs)` passes."""
        return self._assertPassed(gradcheck.check_model(model, x, y, loss_fn, **kwargs), msg)

    def _assertPassed(self, report: gradcheck.Report, msg: str | None) -> gradcheck.Report:  # noqa: N802
        if report.verdict == "PASS":
            return report
        if report.verdict == "FAIL":
            first = "gradients disagree with finite differences"
        else:
            first = "gradients could not be verified (INCONCLUSIVE)"
        # The caller's msg on the first line, not after the report (unittest's _formatMessage).
        self.fail(f"{msg}: {first}\n{report.to_text()}" if msg else f"{first}\n{report.to_text()}")
