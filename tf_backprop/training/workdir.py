"""The run folder: creating it, moving a previous run aside, writing the run's description.

A run folder holds config.json, data.json, metrics.json, ckpt/, tb/ and export/.
"""

from __future__ import annotations

import datetime
import os

from absl import logging

from tf_backprop import data as data_lib
from tf_backprop import files
from tf_backprop.training import checkpoint as checkpoint_lib
from tf_backprop.training.config import TrainConfig

RUN_FILES = ("ckpt", "config.json", "data.json", "metrics.json", "export", "tb")


def make(workdir: str | None) -> str:
    """Creates the run folder; by default a new timestamped one under ./runs/.  Its absolute path."""
    if workdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = os.path.join("runs", stamp)
        suffix = 1
        while os.path.exists(workdir):
            suffix += 1
            workdir = os.path.join("runs", f"{stamp}-{suffix}")
    os.makedirs(workdir, exist_ok=True)
    return os.path.abspath(workdir)


def prepare(config: TrainConfig, datasets: data_lib.Datasets, restart: bool) -> str:
    """Creates or reopens the workdir (refusing another run's), writes config and data stats."""
    workdir = make(config.workdir)
    if restart:
        move_aside(workdir)
    checkpoint_lib.check_resumable(workdir, config)
    files.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    files.write_json(os.path.join(workdir, "data.json"), datasets.preprocessing.to_dict())
    return workdir


def move_aside(workdir: str) -> str | None:
    """Moves a previous run's files into <workdir>/previous-<time>/; returns that folder."""
    names = [n for n in RUN_FILES if os.path.exists(os.path.join(workdir, n))]
    if not names:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    aside = os.path.join(workdir, f"previous-{stamp}")
    os.makedirs(aside)
    for name in names:
        os.replace(os.path.join(workdir, name), os.path.join(aside, name))
    logging.info("restart: moved the previous run's %s to %s", ", ".join(names), aside)
    return aside
