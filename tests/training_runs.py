"""Small, fast training configs shared by the library's training tests."""

from tf_backprop.training import config


def small_config(workdir: str, **overrides) -> config.TrainConfig:
    """A small, fast run on the default regression task."""
    values = {"epochs": 3, "n_samples": 400, "workdir": workdir}
    values.update(overrides)
    return config.TrainConfig(**values)
