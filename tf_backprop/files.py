"""Files that are never half-written, and JSON that strict parsers accept.

Atomic writes: a temporary sibling is written, then renamed into place.  Strict JSON: every
JSON file and line this package writes passes `allow_nan=False`; a value that is not finite
becomes null, and a top-level "non_finite" field names where it was and what it was.

Needs the standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import json
import math
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

from absl import logging

NON_FINITE_FIELD = "non_finite"  # {"final.rmse": "inf", "history[3].loss": "nan"}


def unless_out_of_room(error: OSError, path: str) -> None:
    """Raises an OSError naming `path` when `error` is a full disk or an exhausted quota — a
    failure of the machine's (the CLIs exit 1), where the caller would report other errors of
    making `path` (no such folder, no permission) as the user's input (exit 2)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(error.errno, error.strerror, path) from None


def hidden_sibling(path: str, kind: str) -> str:
    """A fresh name next to `path`, e.g. <parent>/.export.tmp-1a2b3c4d5e6f."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}-{uuid.uuid4().hex[:12]}")


def finite_or_null(payload: Any) -> Any:
    """`payload` with every non-finite float replaced by None.

    A dict gains NON_FINITE_FIELD mapping each replaced value's path (e.g. "final.rmse",
    "history[3].loss") to "inf", "-inf" or "nan"; any other payload with a non-finite value
    is a ValueError (there is no place to say so).
    """
    found: dict[str, str] = {}
    cleaned = _replace_non_finite(payload, "", found)
    if not found:
        return cleaned
    if not isinstance(cleaned, dict):
        raise ValueError(f"JSON: non-finite value(s) at {', '.join(found)} in a {type(payload).__name__}")
    return {**cleaned, NON_FINITE_FIELD: found}


def _replace_non_finite(value: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace_non_finite(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_non_finite(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):  # NumPy's float64 is a float too
        found[path or "value"] = str(float(value))
        return None
    return value


def dumps(payload: Any, **options) -> str:
    """Strict JSON text of `payload` (finite_or_null first); `options` as for json.dumps."""
    return json.dumps(finite_or_null(payload), allow_nan=False, **options)


def write_json(path: str, payload: Any) -> None:
    """Writes `payload` as indented strict JSON to a temporary sibling, then renames it to `path`."""
    with atomic_text(path) as handle:
        handle.write(dumps(payload, indent=2, sort_keys=True))
        handle.write("\n")


def write_text(path: str, text: str) -> None:
    """Writes `text` to a temporary sibling, then renames it to `path`."""
    with atomic_text(path) as handle:
        handle.write(text)


FOLDER, EXISTS = "is a folder", "already exists"  # why a path may not be written as a file


def output_refusal(path: str, overwrite: bool) -> str | None:
    """Why `path` may not be written as a new file (or, with overwrite, a replaced one): FOLDER
    (a folder, or a path ending in a separator) or EXISTS; None when it may."""
    full = os.path.expanduser(path)
    if os.path.isdir(full) or full.endswith(os.sep):
        return FOLDER
    if os.path.lexists(full) and not overwrite:
        return EXISTS
    return None


@contextlib.contextmanager
def atomic_text(path: str, overwrite: bool = True, compress: bool = False) -> Iterator[IO[str]]:
    """A text handle whose file appears at `path` only once the block completes.

    OSError from opening the temporary file propagates (one from writing it names `path`); on
    any failure the temporary file is removed and `path` keeps its previous content.
    overwrite=False: FileExistsError if `path` exists when the block completes (it is never
    replaced then).  compress: gzip it.  A symbolic link is written through, as the shell's `>`
    does (the link stays, its target is replaced), and a replaced file's permissions are kept.
    """
    target = os.path.realpath(path) if overwrite and os.path.islink(path) else os.path.abspath(path)
    remove_abandoned(target)
    temporary = hidden_sibling(target, "tmp")
    # Created and locked before it is written, held until it is renamed: the lock tells a later
    # writer's remove_abandoned that this one is alive.
    lock = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _lock_if_possible(lock)
        with _open_text(temporary, path, compress) as handle:
            yield handle
        if overwrite:
            _keep_mode(target, temporary)
            os.replace(temporary, target)
        else:
            _place_new(temporary, target)
    except OSError as error:
        # A failed write or close (a full disk) names no file: name the one being written.
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, path) from None
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
        os.close(lock)


def _lock_if_possible(descriptor: int) -> None:
    """An exclusive flock on `descriptor`; none where the file system has no locks (ENOLCK on
    some network mounts): the write goes on, and remove_abandoned cannot lock it there either."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        logging.debug("writing without a lock on its temporary: %s", error)


ABANDONED_AFTER_SECONDS = 60  # a temporary this old and unlocked is no writer's (see below)


def remove_abandoned(path: str) -> None:
    """Removes the hidden temporaries of earlier writes of `path` that were killed midway
    (SIGKILL, a lost machine: `atomic_text` removes its own on any error it can see).

    A writer holds an flock on its temporary until it is renamed, and the OS releases it when
    the writer dies, so a temporary that can be locked is abandoned; one modified in the last
    ABANDONED_AFTER_SECONDS is left alone too (its writer may be between creating and locking
    it).  Anything that cannot be read, locked or removed is left as it is.
    """
    folder, name = os.path.split(path)
    pattern = re.compile(rf"\.{re.escape(name)}\.tmp-[0-9a-f]{{12}}")
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry):
            _remove_if_abandoned(os.path.join(folder, entry))


def _remove_if_abandoned(temporary: str) -> None:
    """Removes `temporary` if it is a regular file, not recently modified and not locked."""
    try:
        descriptor = os.open(temporary, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < ABANDONED_AFTER_SECONDS:
            return
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer lives
        os.remove(temporary)
        logging.info("removed %s: a write killed midway left it", temporary)
    except OSError:
        return
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _open_text(temporary: str, path: str, compress: bool) -> Iterator[IO[str]]:
    """temporary opened for text; gzip's header names `path`'s file, not the temporary's
    (`gunzip -N` restores the name the header records)."""
    if not compress:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            yield handle
        return
    name = os.path.basename(path).removesuffix(".gz")
    with open(temporary, "wb") as raw, gzip.GzipFile(filename=name, mode="wb", fileobj=raw) as packed:
        with io.TextIOWrapper(packed, encoding="utf-8", newline="") as handle:
            yield handle


def _keep_mode(old: str, new: str) -> None:
    """Gives `new` the permission bits of an existing file `old`."""
    try:
        mode = stat.S_IMODE(os.stat(old).st_mode)
    except FileNotFoundError:
        return
    os.chmod(new, mode)


def _place_new(temporary: str, path: str) -> None:
    """Renames `temporary` to `path` unless `path` exists (FileExistsError), atomically where
    the filesystem has hard links."""
    try:
        os.link(temporary, path)  # FileExistsError if path exists, whatever appeared meanwhile
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", path) from None
        os.replace(temporary, path)


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
