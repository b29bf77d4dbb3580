"""The run folder: whose it is, one run at a time, its outputs checked before training.

A run folder holds config.json, data.json, metrics.json, ckpt/, tb/, export/, the lock file
.lock, and for a streamed source stream/ (the statistics pass's results and row caches).
`prepared(config, datasets, restart)` makes it ready for a run, in this order (a streamed
source: `opened` before its statistics pass, then `finish`):

1. **Ownership**, before anything is written: a missing or empty folder becomes a run folder;
   a folder whose config.json carries the format marker ("format": "tf_backprop.run",
   checkpoint.RUN_FORMAT) is one; so is a folder of a run from before the marker (its
   config.json holds config fields only, beside data.json or ckpt/).  Anything else that is not
   empty is refused (WorkdirError), and so is a path that is a file or cannot be created.
2. **The lock**: an exclusive `fcntl.flock` on .lock, held for the whole run; the OS releases it
   when the process dies, so a killed run never blocks its rerun.  A second run into a locked
   folder gets WorkdirError naming the holder's pid (written into .lock).
3. **Resume checks** (resume.check_resumable, check_same_data) or, with restart, the
   previous run's files moved into previous-<time>/ (only the run's own files).
4. **Leftovers** of a killed run are removed: checkpoint temporaries, hidden temporary files
   of the atomic writes, non-chief workers' scratch folders.
5. **Outputs**: every path the run will write (ckpt/, tb/, metrics.json, export/) is free or
   of the right kind, and every folder it writes into is writable: a conflict is found now,
   not after training.
6. config.json (the marker) is written first, then data.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator

from absl import logging

from tf_backprop import data as data_lib
from tf_backprop import files
from tf_backprop.serving import export as export_lib
from tf_backprop.training import checkpoint as checkpoint_lib
from tf_backprop.training import resume as resume_lib
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.errors import WorkdirError
from tf_backprop.training.plan import Plan

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.json"
TENSORBOARD_DIR = "tb"
STREAM_DIR = "stream"  # a streamed source's statistics pass and row caches
RUN_FILES = (
    checkpoint_lib.CHECKPOINT_DIR,
    checkpoint_lib.CONFIG_FILE,
    checkpoint_lib.DATA_FILE,
    METRICS_FILE,
    export_lib.EXPORT_DIR,
    TENSORBOARD_DIR,
    STREAM_DIR,
)
_PREVIOUS = re.compile(r"previous-\d{8}-\d{6}-\d{6}")  # move_aside's folders
# files.hidden_sibling's names for the run's files: .metrics.json.tmp-<12 hex>, .export.old-…
_RUN_FILE_NAMES = "|".join(re.escape(name) for name in RUN_FILES)
_HIDDEN = re.compile(rf"\.({_RUN_FILE_NAMES})\.(tmp|old)-[0-9a-f]{{12}}")
_WORKER_SCRATCH = re.compile(r"workertemp_\d+")  # distributed: a non-chief worker's scratch folder
_PROBE = re.compile(r"\.write-check-[a-z0-9_]{8}")  # _check_writable's file (mkstemp's 8 characters)
_MAX_LISTED = 5


@contextlib.contextmanager
def prepared(
    config: TrainConfig, datasets: data_lib.Datasets, restart: bool, plan: Plan | None = None
) -> Iterator[str]:
    """The run folder's absolute path, ready and locked for the block (module docstring).

    Raises WorkdirError (nothing written), ConfigMismatchError (the folder holds a run of
    another model or other data, or one trained past plan.total_steps; nothing written but the
    lock file).  plan: the run's; None skips the steps check (tests of the folder alone).
    """
    with opened(config, restart) as workdir:
        finish(workdir, config, datasets, plan)
        yield workdir


@contextlib.contextmanager
def opened(config: TrainConfig, restart: bool) -> Iterator[str]:
    """Steps 1–3 without the data: the folder checked as ours (or made), locked for the block, a
    previous run moved aside (restart) or its config checked for resuming.  A streamed source
    opens its folder so before its statistics pass writes into it, then calls `finish`."""
    workdir = _create(config.workdir)
    with RunLock(workdir):
        if restart:
            move_aside(workdir)
        resume_lib.check_resumable(workdir, config)
        yield workdir


@dataclasses.dataclass(frozen=True)
class Before:
    """What a run folder was before a run opened it, to put it back (`put_back`) when the run's
    data turns out bad after the folder was opened (a streamed source's statistics pass).

    made: the folder did not exist; remove: then the topmost folder the run creates (the run
    folder or a missing parent of it), whose part above the run folder goes only while empty;
    names: its entries."""

    made: bool
    remove: str | None
    names: frozenset[str]


def before_opening(workdir: str | None) -> Before:
    """The state `put_back` restores, taken before `opened` (workdir None: a new runs/<time>)."""
    if workdir is None:
        runs = os.path.abspath("runs")
        return Before(True, None if os.path.lexists(runs) else runs, frozenset())
    path = os.path.abspath(os.path.expanduser(workdir))
    top, probe = None, path
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        top, probe = probe, os.path.dirname(probe)
    names = frozenset(os.listdir(path)) if os.path.isdir(path) else frozenset()
    return Before(top is not None, top, names)


def put_back(workdir: str, before: Before) -> None:
    """Undoes what a run did to its folder since `before`: a folder it made goes (with the
    parents it made), a folder that was empty is emptied, a previous run that `restart` moved
    aside comes back.  A resumed run's folder keeps its files (its stream/ caches stay valid)."""
    if before.made:
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_empty_parents(workdir, before.remove)
        return
    names = os.listdir(workdir)
    asides = [n for n in names if _PREVIOUS.fullmatch(n) and n not in before.names]
    for name in names:  # what this run added, and with an aside the run files it replaces
        if name not in asides and (name not in before.names or (asides and name in RUN_FILES)):
            path = os.path.join(workdir, name)
            with contextlib.suppress(FileNotFoundError):  # a worker's scratch folder, gone meanwhile
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
    for aside in asides:
        for name in os.listdir(os.path.join(workdir, aside)):
            os.replace(os.path.join(workdir, aside, name), os.path.join(workdir, name))
        os.rmdir(os.path.join(workdir, aside))
        logging.info("restart undone: the previous run is back in %s", workdir)


def _remove_empty_parents(workdir: str, top: str | None) -> None:
    """Removes the parents of `workdir` up to `top` that the run made, while they are empty (a
    run started meanwhile in the same new parent keeps it)."""
    parent = os.path.dirname(workdir)
    while top is not None and (parent == top or parent.startswith(top + os.sep)):
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


def write_config(workdir: str, config: TrainConfig) -> None:
    """config.json, whose format marker makes the folder a run folder."""
    files.write_json(
        os.path.join(workdir, checkpoint_lib.CONFIG_FILE), checkpoint_lib.config_document(config)
    )


def finish(workdir: str, config: TrainConfig, datasets: data_lib.Datasets, plan: Plan | None = None) -> None:
    """Steps 3–6 for an opened folder: the data and the steps trained checked for resuming,
    leftovers removed, outputs checked, config.json (the marker: first) and data.json written."""
    resume_lib.check_same_data(workdir, datasets)
    _check_not_past(workdir, config, plan)
    remove_leftovers(workdir)
    check_outputs(workdir, config)
    write_config(workdir, config)
    files.write_json(os.path.join(workdir, checkpoint_lib.DATA_FILE), datasets.preprocessing.to_dict())


def check_read_only(
    config: TrainConfig, datasets: data_lib.Datasets | None, restart: bool, plan: Plan | None = None
) -> str:
    """The checks of `prepared` that write nothing (ownership; unless restart, resuming: the
    config, the data and the steps trained, each unless None), for the workers of a
    multi-worker run, which share the chief's folder; its absolute path."""
    workdir = os.path.abspath(os.path.expanduser(config.workdir))
    check_owned(workdir)
    if not restart:
        resume_lib.check_resumable(workdir, config)
        if datasets is not None:
            resume_lib.check_same_data(workdir, datasets)
        _check_not_past(workdir, config, plan)
    return workdir


def _check_not_past(workdir: str, config: TrainConfig, plan: Plan | None) -> None:
    """A resume that would train nothing refused: the run trained past the plan, or stopped early."""
    if plan is not None:
        resume_lib.check_not_past(workdir, config, plan.total_steps, plan.steps_per_epoch)
    resume_lib.check_not_stopped(workdir, config)


# ----------------------------------------------------------------------------- ownership
def _create(workdir: str | None) -> str:
    """Checks ownership, then creates the folder (default: a new one under ./runs/); its path."""
    if workdir is None:
        return _new_default_folder()
    path = os.path.abspath(os.path.expanduser(workdir))
    check_owned(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"workdir: cannot create {path} ({error.strerror or error})") from None
    return path


def _new_default_folder() -> str:
    """A new folder runs/<date>-<time>[-N] (created here, so two runs never share one)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in range(1, 10_000):
        path = os.path.abspath(os.path.join("runs", stamp if suffix == 1 else f"{stamp}-{suffix}"))
        try:
            os.makedirs(path)
        except FileExistsError:
            continue
        except OSError as error:
            raise WorkdirError(f"workdir: cannot create {path} ({error.strerror or error})") from None
        return path
    raise WorkdirError(f"workdir: runs/{stamp}-* are all taken; give --workdir")


def check_owned(workdir: str) -> None:
    """WorkdirError unless `workdir` is missing, empty (but for a killed run's lock file and
    temporaries) or a run folder of this package."""
    if not os.path.lexists(workdir):
        return
    if not os.path.isdir(workdir):
        raise WorkdirError(
            f"workdir: {workdir} is a file, not a folder; give a new folder, an empty one or an earlier run's"
        )
    try:
        names = sorted(os.listdir(workdir))
    except OSError as error:
        raise WorkdirError(f"workdir: cannot read {workdir} ({error.strerror or error})") from None
    others = [name for name in names if not _is_leftover(workdir, name)]
    if not others or is_run_folder(workdir):
        return
    shown = ", ".join(others[:_MAX_LISTED])
    shown += f" and {len(others) - _MAX_LISTED} more" if len(others) > _MAX_LISTED else ""
    raise WorkdirError(
        f"workdir: {workdir} is not empty and not a tf_backprop run folder (it holds {shown}); "
        f"nothing was written: use a new or empty folder (--restart moves aside only runs of this package)"
    )


def is_run_folder(workdir: str) -> bool:
    """Whether `workdir` holds a run of this package (its config.json, module docstring)."""
    path = os.path.join(workdir, checkpoint_lib.CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return False
    if not checkpoint_lib.is_config_document(document):
        return False
    marked = "format" in document
    others = (checkpoint_lib.DATA_FILE, checkpoint_lib.CHECKPOINT_DIR)
    return marked or any(os.path.exists(os.path.join(workdir, name)) for name in others)


def _is_leftover(workdir: str, name: str) -> bool:
    """A name a run of ours leaves even before its config.json exists."""
    if name == LOCK_FILE or _HIDDEN.fullmatch(name) or _PROBE.fullmatch(name):
        return True
    return bool(_PREVIOUS.fullmatch(name)) and is_run_folder(os.path.join(workdir, name))


# ----------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive flock on <workdir>/.lock while the block runs; WorkdirError if another run
    holds it.  The OS releases it when the process ends, however it ends."""

    def __init__(self, workdir: str):
        self.workdir, self.path, self.fd = workdir, os.path.join(workdir, LOCK_FILE), None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            files.unless_out_of_room(error, self.workdir)
            raise WorkdirError(
                f"workdir: cannot write in {self.workdir} ({error.strerror or error})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid not yet recorded"
            os.close(fd)
            if isinstance(error, BlockingIOError):
                raise WorkdirError(
                    f"workdir: {self.workdir} is in use by another run ({holder}); wait for it to end, "
                    f"or use another --workdir"
                ) from None
            raise WorkdirError(f"workdir: cannot lock {self.path} ({error.strerror or error})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as error:  # a full disk: the write names no file; the lock is released
            os.close(fd)
            raise OSError(error.errno, error.strerror, self.path) from None
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        os.ftruncate(self.fd, 0)  # no stale pid once released
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


# ----------------------------------------------------------------------------- outputs
def check_outputs(workdir: str, config: TrainConfig) -> None:
    """WorkdirError unless every path the run writes is absent or of the kind it writes, and
    every folder it writes into is writable."""
    expected = {
        checkpoint_lib.CONFIG_FILE: "file",
        checkpoint_lib.DATA_FILE: "file",
        METRICS_FILE: "file",
        checkpoint_lib.CHECKPOINT_DIR: "folder",
    }
    if config.monitor:
        for name in ("", "train", "validation"):
            expected[os.path.join(TENSORBOARD_DIR, name)] = "folder"
    if config.export:
        expected[export_lib.EXPORT_DIR] = "export"
    folders = [workdir]
    for name, kind in expected.items():
        path = os.path.join(workdir, name)
        if os.path.lexists(path):
            _check_kind(path, kind)
            folders += [path] if kind == "folder" else []
    for folder in folders:
        _check_writable(folder)


def _check_kind(path: str, kind: str) -> None:
    if kind == "file" and not os.path.isfile(path):
        problem = "is not a file (the run writes a file there)"
    elif kind == "folder" and not os.path.isdir(path):
        problem = "is not a folder (the run writes a folder there)"
    elif kind == "export" and (refusal := export_lib.replacement_refusal(path)):
        # The run's export replaces only an empty folder or a SavedModel with nothing else in it.
        problem = refusal
    else:
        return
    raise WorkdirError(f"workdir: {path} {problem}; move it away, or use another --workdir")


def _check_writable(folder: str) -> None:
    """WorkdirError unless a file can be created in `folder` (tried: os.access is no proof)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError as error:
        files.unless_out_of_room(error, folder)
        raise WorkdirError(f"workdir: cannot write in {folder} ({error.strerror or error})") from None
    os.close(fd)
    os.remove(probe)


# ----------------------------------------------------------------------------- leftovers
def remove_leftovers(workdir: str) -> None:
    """Removes what killed runs left: checkpoint temporaries, hidden temporaries of the atomic
    writes, writability probes and worker scratch folders; a complete export set aside by an interrupted
    replacement is put back if the export itself is missing."""
    checkpoint_lib.remove_temporaries(workdir)
    export = os.path.join(workdir, export_lib.EXPORT_DIR)
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if name.startswith(f".{export_lib.EXPORT_DIR}.old-") and not os.path.lexists(export):
            os.rename(path, export)
            logging.info("put back the export an interrupted replacement had set aside: %s", name)
        elif any(pattern.fullmatch(name) for pattern in (_HIDDEN, _WORKER_SCRATCH, _PROBE)):
            _remove(path)
            logging.info("removed %s, left by an interrupted run", path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


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
