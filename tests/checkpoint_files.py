"""Helpers shared by the checkpoint tests: find, damage and fingerprint checkpoint files."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tf_backprop.training import checkpoint


def ckpt_dir(workdir: str) -> str:
    return os.path.join(workdir, checkpoint.CHECKPOINT_DIR)


def ckpt_files(workdir: str, step: int) -> list[str]:
    """Paths of the files of checkpoint ckpt-<step> (.index and data shards)."""
    return sorted(tf.io.gfile.glob(os.path.join(ckpt_dir(workdir), f"ckpt-{step}.*")))


def truncate(path: str) -> None:
    """Cuts a file to half its length, as a kill during a copy or a full disk would."""
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def truncate_checkpoint(workdir: str, step: int, part: str) -> None:
    """Truncates the "index" or "data" file of ckpt-<step>."""
    suffix = ".index" if part == "index" else ".data-"
    (path,) = [p for p in ckpt_files(workdir, step) if suffix in p]
    truncate(path)


def file_states(directory: str) -> dict[str, tuple[int, bytes]]:
    """{name: (mtime_ns, bytes)} of every file directly in `directory`."""
    states = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                states[name] = (os.stat(path).st_mtime_ns, handle.read())
    return states


def read_json(*path: str):
    with open(os.path.join(*path), encoding="utf-8") as handle:
        return json.load(handle)
