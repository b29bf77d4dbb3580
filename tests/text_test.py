"""text: the message helpers shared by every layer."""

import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import text


class DurationTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        (0.2, "1 s"),
        (40.4, "40 s"),
        (89, "89 s"),
        (90, "2 min"),
        (12 * 60 + 20, "12 min"),
        (89 * 60, "89 min"),
        (90 * 60, "1 h 30 min"),
        (5 * 3600 + 17 * 60 + 10, "5 h 17 min"),
        (3 * 3600, "3 h"),
    )
    def test_rough_duration(self, seconds, expected):
        self.assertEqual(text.duration(seconds), expected)
