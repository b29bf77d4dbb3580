"""gradcheck.compare and gradcheck.Report: the comparison core every check is built on."""

import json

import numpy as np
import tensorflow as tf

from tf_backprop import gradcheck


class CompareTest(tf.test.TestCase):
    """The comparison core every report is built on."""

    def test_relative_error_uses_the_floor(self):
        tolerance = gradcheck.Tolerance(atol=1e-8, rtol=1e-5)  # floor 1e-3
        result = gradcheck.compare([1.0, 1e-6, 0.0], [1.0 + 2e-6, 1.1e-6, 0.0], tolerance)
        # Element 1: |a − b| = 1e-7 over the floor 1e-3 → rel 1e-4 > 1e-5: it fails.
        self.assertEqual(result.failures, 1)
        self.assertEqual(result.worst.location.index, (1,))
        self.assertAllClose(result.worst.rel_error, 1e-4)
        self.assertAllClose(result.max_abs, 2e-6)

    def test_kinks_are_not_failures_and_not_in_the_maxima(self):
        tolerance = gradcheck.Tolerance(atol=1e-8, rtol=1e-5)
        result = gradcheck.compare([1.0, 0.0], [1.0, 0.5], tolerance, kink=[False, True])
        self.assertTrue(result.passed)
        self.assertEqual((result.kinks, result.failures, result.max_abs), (1, 0, 0.0))
        self.assertEqual(result.worst_kink.location.index, (1,))

    def test_nan_fails(self):
        result = gradcheck.compare([1.0, np.nan], [1.0, 1.0], gradcheck.FLOAT64)
        self.assertFalse(result.passed)
        self.assertEqual(result.worst.location.index, (1,))

    def test_json_has_no_nan(self):
        result = gradcheck.compare([np.nan], [1.0], gradcheck.FLOAT64)
        report = gradcheck.Report(
            "t", "full", "float64", 1e-6, (gradcheck.Entry("x", (1,), {"a": None}, (result,)),)
        )
        parsed = json.loads(report.to_json())  # strict: no NaN, which JSON parsers reject
        comparison = parsed["entries"][0]["comparisons"][0]
        self.assertIsNone(comparison["max_rel"])
        self.assertEqual(parsed["non_finite"]["entries[0].comparisons[0].max_rel"], "inf")


if __name__ == "__main__":
    tf.test.main()
