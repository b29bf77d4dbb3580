"""Resume checks: may the run in a folder continue with this config and this data?

config.json (whose "format" field marks the folder as a run folder) must hold the same model and
data configuration (`check_resumable`; the same net or CSV spelled another way is no change),
data.json the same data fingerprint (`check_same_data`), and the newest checkpoint must not be
past the run asked for (`check_not_past`) nor, for a run that stopped early, asked to train
differently (`check_not_stopped`): either would train nothing and rewrite config.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop.data import fingerprint as fingerprint_lib
from tf_backprop.training import checkpoint
from tf_backprop.training import config as config_lib
from tf_backprop.training.config import RESUMABLE_FIELDS, TrainConfig
from tf_backprop.training.errors import ConfigMismatchError


def _saved_config(workdir: str) -> tuple[dict, int] | None:
    """config.json's fields (with the defaults of fields added since it was written, e.g.
    strategy) and its format version; None for a folder without one."""
    path = os.path.join(workdir, checkpoint.CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**defaults, **checkpoint.config_fields(document)}, document.get("format_version", 0)


def check_resumable(workdir: str, config: TrainConfig) -> TrainConfig | None:
    """The config saved in workdir, or None for a new workdir.

    Raises ConfigMismatchError naming every field that differs in a way that changes the model or
    the data; logs the harmless differences.
    """
    found = _saved_config(workdir)
    if found is None:
        return None
    saved, version = found
    if version < checkpoint.GLOBAL_BATCH_VERSION and saved.get("strategy", "none") != "none":
        raise ConfigMismatchError(
            f"{workdir} holds a run saved when --batch_size was the per-replica batch: its steps took "
            f"batch_size × replicas rows, and the replica count was not recorded; finish it with the "
            f"release that wrote it, or start over with --restart"
        )
    new = config.to_dict()
    differing = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k))
    if "workdir" in differing and _resolved(saved.get("workdir")) == _resolved(new.get("workdir")):
        differing.remove("workdir")  # the same folder, given relative once and absolute once
    if "data" in differing and _csv_path(saved.get("data")) == _csv_path(new.get("data")) is not None:
        differing.remove("data")  # csv:x.csv, csv:./x.csv and its absolute path: the same file
    if "data" in differing and _moved_csv(saved.get("data"), new.get("data")):
        differing.remove("data")
        logging.info(
            "resume with --data %s for the saved %s, which is relative to the folder the run trained "
            "in: the data itself is checked by its fingerprint",
            new.get("data"),
            saved.get("data"),
        )
    if {"layers", "hidden"} & set(differing) and _same_net(saved, new):
        differing = [k for k in differing if k not in ("layers", "hidden")]  # --hidden=8 = --layers=3,8,1
    harmful = [k for k in differing if k not in RESUMABLE_FIELDS]
    if harmful:
        describe = config_lib.describe
        details = "; ".join(
            f"{k}: saved {describe(k, saved.get(k))}, given {describe(k, new.get(k))}" for k in harmful
        )
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different configuration ({details}); use another "
            f"--workdir, or --restart to move the old run aside"
        )
    for key in differing:
        logging.info(
            "resume with changed %s: %s -> %s",
            key,
            config_lib.describe(key, saved.get(key)),
            config_lib.describe(key, new.get(key)),
        )
    return TrainConfig.from_dict(saved)


def _moved_csv(saved, new) -> bool:
    """Whether `new` may be the saved CSV given from another folder: the saved path is relative
    and names no file from here, the given one does, and both name a file of the same name
    (`check_same_data` then compares the data itself)."""
    saved_path, new_path = data_lib.csv_path(saved), data_lib.csv_path(new)
    if saved_path is None or new_path is None or os.path.isabs(os.path.expanduser(saved_path)):
        return False
    if os.path.exists(_resolved(saved_path)) or not os.path.exists(_resolved(new_path)):
        return False
    return os.path.basename(saved_path) == os.path.basename(new_path)


def _csv_path(source) -> str | None:
    """A csv: source's path resolved against the current folder; None for other sources."""
    path = data_lib.csv_path(source)
    return None if path is None else _resolved(path)


def _same_net(saved: dict, new: dict) -> bool:
    """Whether two configs' layers/hidden give the same widths: the hidden ones agree, and the
    ends where both give `layers` (the data fixes them otherwise, and it is checked apart)."""

    def hidden(fields: dict) -> tuple:
        if fields.get("layers") is not None:
            return tuple(fields["layers"][1:-1])
        return tuple(fields["hidden"]) if fields.get("hidden") is not None else config_lib.DEFAULT_HIDDEN

    if hidden(saved) != hidden(new):
        return False
    ends = [(f["layers"][0], f["layers"][-1]) for f in (saved, new) if f.get("layers") is not None]
    return len(set(ends)) <= 1


def check_not_past(workdir: str, config: TrainConfig, total_steps: int, steps_per_epoch: int) -> None:
    """ConfigMismatchError when the run in workdir has trained past total_steps, or would
    stretch its whole-run cosine decay over another length (`_check_schedule_kept`).

    Resuming it would train nothing and leave a config.json (--epochs=2) that contradicts the
    history (3 epochs); refused before anything is written.  The step is the newest listed
    checkpoint's number (`Keeper.save` numbers them by the global step).
    """
    step = latest_step(workdir)
    if step is not None:
        _check_schedule_kept(workdir, config, step)
    if step is None or step <= total_steps:
        return
    if config.steps:
        given, needed = f"--steps={config.steps}", f"--steps={step}"
    else:
        given, needed = f"--epochs={config.epochs}", f"--epochs={-(-step // steps_per_epoch)}"
    raise ConfigMismatchError(
        f"{given}: {workdir} has already trained {step} steps ({step / steps_per_epoch:g} epochs of "
        f"{steps_per_epoch} steps); resume it with {needed} or more, or start over with --restart"
    )


def _check_schedule_kept(workdir: str, config: TrainConfig, step: int) -> None:
    """ConfigMismatchError when a cosine decay over the whole run (--lr_decay_steps=0) would be
    stretched over another run length midway: the rate jumps back up from where it had decayed
    to (0 at step 80 of 80, then 0.0035 at step 96 of 160), which no single run follows."""
    found = _saved_config(workdir)
    if found is None or config.lr_schedule != "cosine" or config.lr_decay_steps:
        return
    saved, new = found[0], config.to_dict()
    if (saved.get("epochs"), saved.get("steps")) == (new.get("epochs"), new.get("steps")):
        return
    was = f"--steps={saved['steps']}" if saved.get("steps") else f"--epochs={saved.get('epochs')}"
    given = f"--steps={config.steps}" if config.steps else f"--epochs={config.epochs}"
    raise ConfigMismatchError(
        f"{given}: {workdir} decays its learning rate by cosine over the whole run (--lr_decay_steps=0), "
        f"laid over {was}; from step {step} another length would stretch the decay midway; resume it "
        f"with {was}, or start over with --restart"
    )


# What a resumed run's training would follow: changed on a run that stopped early, none applies.
_TRAINING_FIELDS = (
    "epochs", "steps", "patience", "restore_best", "learning_rate", "clip_norm", "clip_global_norm",
    "clip_value", "verify_every", "verify_tolerance",
)  # fmt: skip
_STOPPED_KEY = "state/stopped/.ATTRIBUTES/VARIABLE_VALUE"


def check_not_stopped(workdir: str, config: TrainConfig) -> None:
    """ConfigMismatchError when the run in workdir stopped early and `config` changes how it
    trains: resuming a stopped run trains nothing, so the change would not apply (and config.json
    would record it beside a history that never followed it).  The same command stays a no-op."""
    found = _saved_config(workdir)
    if found is None:
        return
    saved, new = found[0], config.to_dict()
    changed = [name for name in _TRAINING_FIELDS if saved.get(name) != new.get(name)]
    if not changed or not _stopped_early(workdir):
        return
    raise ConfigMismatchError(
        f"{workdir} stopped early at step {latest_step(workdir)} (no better validation loss for "
        f"{saved['patience']} epochs): resuming it trains nothing, so {', '.join('--' + n for n in changed)} "
        f"would not apply; rerun it as it was, or start over with --restart"
    )


def _stopped_early(workdir: str) -> bool:
    """Whether the newest checkpoint says the run stopped early (False if none is readable)."""
    try:
        latest = tf.train.latest_checkpoint(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
        return latest is not None and bool(tf.train.load_checkpoint(latest).get_tensor(_STOPPED_KEY))
    except (ValueError, OSError, tf.errors.OpError):
        return False


def latest_step(workdir: str) -> int | None:
    """The newest checkpoint's global step, from ckpt/checkpoint (None: no checkpoint listed, or
    the list unreadable: restoring then says why)."""
    try:
        state = tf.train.get_checkpoint_state(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
    except (ValueError, OSError, tf.errors.OpError):
        return None
    if state is None:
        return None
    names = (os.path.basename(path) for path in state.all_model_checkpoint_paths)
    steps = [int(match[1]) for name in names if (match := re.fullmatch(r"ckpt-(\d+)", name))]
    return max(steps, default=None)


def check_same_data(workdir: str, datasets: data_lib.Datasets) -> None:
    """ConfigMismatchError when workdir's data.json says its run was trained on other data.

    Compares the data fingerprints; a data.json written before fingerprints existed is compared
    by its statistics instead.  Nothing to compare (a new run folder): no error.
    """
    if not os.path.exists(os.path.join(workdir, checkpoint.DATA_FILE)):
        return
    saved, new = (
        checkpoint.read_run_json(workdir, checkpoint.DATA_FILE, checkpoint.json_object),
        datasets.preprocessing.to_dict(),
    )
    if saved.get("fingerprint") is not None:
        if saved["fingerprint"] == new["fingerprint"]:
            return
        describe = fingerprint_lib.describe
        what = f"was {describe(saved['fingerprint'])}; now {describe(new['fingerprint'])}"
    else:  # a run from before fingerprints
        differing = [k for k in new if k != "fingerprint" and saved.get(k) != new[k]]
        if not differing:
            return
        what = f"its {', '.join(differing)} differ from the saved run's"
    raise ConfigMismatchError(
        f"{workdir} was trained on other data: {datasets.source} has changed ({what}); rerun with "
        f"--restart to train on the new data (the old run moves to previous-<time>/), or give the "
        f"original data back to resume"
    )


def _resolved(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))
