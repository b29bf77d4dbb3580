"""Files that are never half-written: write a temporary sibling, then rename it into place.

Needs the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, Any

from absl import logging


def hidden_sibling(path: str, kind: str) -> str:
    """A fresh name next to `path`, e.g. <parent>/.export.tmp-1a2b3c4d5e6f."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}-{uuid.uuid4().hex[:12]}")


def write_json(path: str, payload: Any) -> None:
    """Writes `payload` as indented JSON to a temporary sibling, then renames it to `path`."""
    with atomic_text(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_text(path: str, text: str) -> None:
    """Writes `text` to a temporary sibling, then renames it to `path`."""
    with atomic_text(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_text(path: str) -> Iterator[IO[str]]:
    """A text handle whose file appears at `path` only once the block completes.

    OSError from opening the temporary file propagates; on any failure the temporary file is
    removed and `path` keeps its previous content.
    """
    temporary = hidden_sibling(os.path.abspath(path), "tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def replace_folder(staging: str, path: str) -> None:
    """Renames the complete folder `staging` to `path`; an old `path` is deleted only afterwards."""
    if not os.path.lexists(path):
        os.rename(staging, path)
        return
    aside = hidden_sibling(path, "old")
    os.rename(path, aside)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(aside, path)  # put the previous folder back
        raise
    shutil.rmtree(aside, ignore_errors=True)
    if os.path.lexists(aside):
        logging.warning("could not delete the replaced folder %s; remove it by hand", aside)
