"""Shards: the files a `csv:` source names — one path, or a glob pattern's matches in sorted order.

`--data=csv:data/part-*.csv.gz` names every matching file (shards with the same header, plain
or gzip-compressed by their `.gz` suffix); their sorted order is the source's row order, for
the in-memory loader, the streaming statistics pass and prediction alike.  A path that exists
as it is names that file, even if it holds glob characters.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import struct

from tf_backprop import arguments
from tf_backprop.data.errors import DataError

CSV_PREFIX = arguments.CSV_PREFIX  # a source --data=csv:PATH
GZIP_SUFFIX = ".gz"
_GLOB_CHARS = frozenset("*?[")


def is_gzip(path: str) -> bool:
    """Whether the file is read through gzip (by its name)."""
    return path.endswith(GZIP_SUFFIX)


def is_pattern(path: str) -> bool:
    """Whether `path` is a glob pattern rather than a file's name."""
    return bool(_GLOB_CHARS & set(path)) and not os.path.exists(os.path.expanduser(path))


def expand(path: str) -> list[str]:
    """The files `path` names, in sorted order; DataError when a pattern matches no file.

    A plain path is returned as it is (opening it reports a missing file); a pattern's matches
    keep the pattern's form (relative stays relative), so messages name them as the user would.
    """
    if not is_pattern(path):
        return [path]
    matches = sorted(p for p in glob.glob(os.path.expanduser(path)) if os.path.isfile(p))
    if not matches:
        raise DataError(f"{path}: no file matches the pattern")
    return matches


GZIP_CSV_RATIO = 4  # CSV text compresses ~3-10x; the estimate when a gzip trailer cannot say


def data_size(path: str) -> int:
    """The CSV bytes a file holds: its size, or for a .gz file the size its trailer records;
    0 when the file cannot be read (reading it reports why).

    The trailer holds the last gzip member's size modulo 4 GiB: below the compressed size it
    cannot be the whole (several members concatenated, or over 4 GiB), and the estimate is
    GZIP_CSV_RATIO times the compressed size instead.
    """
    try:
        compressed = os.path.getsize(os.path.expanduser(path))
        if not is_gzip(path):
            return compressed
        with open(os.path.expanduser(path), "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            recorded = struct.unpack("<I", handle.read(4))[0]
    except (OSError, struct.error):
        return 0
    return recorded if recorded >= compressed else GZIP_CSV_RATIO * compressed


def total_data_size(paths: list[str]) -> int:
    """data_size summed over the files."""
    return sum(data_size(path) for path in paths)


def open_binary(path: str):
    """The file opened for reading bytes, through gzip for a .gz name (OSError as open's)."""
    expanded = os.path.expanduser(path)
    return gzip.open(expanded, "rb") if is_gzip(path) else open(expanded, "rb")


class Digest:
    """The SHA-256 and length of a file's bytes as read (a .gz file's: uncompressed), fed
    block by block by whoever reads it."""

    def __init__(self):
        self.sha256, self.size = hashlib.sha256(), 0

    def update(self, block: bytes) -> None:
        self.sha256.update(block)
        self.size += len(block)

    @classmethod
    def of_file(cls, path: str, block_bytes: int = 4 << 20) -> Digest:
        """A file's digest, read for it alone."""
        digest = cls()
        with open_binary(path) as handle:
            while block := handle.read(block_bytes):
                digest.update(block)
        return digest
