"""Data fingerprints: what identifies the data a run was trained on, so a resume can tell it changed.

A fingerprint is a small JSON-ready dict stored with the statistics (`Preprocessing.fingerprint`,
in a run's data.json):

* CSV: ``{"kind": "csv", "bytes": N, "sha256": "<hex>", "rows": m}`` — the file's length and
  the SHA-256 of its bytes as read, and its data rows (several shards: their total length and
  the SHA-256 of their digests in shard order);
* synthetic: ``{"kind": "synthetic", "source": "spirals:3", "seed": s, "n_samples": m,
  "noise": σ}`` — everything the rows are generated from.
"""

from __future__ import annotations

import hashlib

_SHOWN_DIGITS = 12  # of a SHA-256 in messages


def of_csv(size: int, sha256: str, rows: int) -> dict:
    """The fingerprint of a CSV file of `size` bytes with this digest and `rows` data rows."""
    return {"kind": "csv", "bytes": int(size), "sha256": sha256, "rows": int(rows)}


def of_shards(sizes: list[int], digests: list[str], rows: int) -> dict:
    """The fingerprint of a CSV source of shards with these sizes and SHA-256 digests (in shard
    order): one shard's is its file's; several: their total size and the digest of their digests."""
    digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    return of_csv(sum(sizes), digest, rows)


def of_synthetic(source: str, seed: int, n_samples: int, noise: float) -> dict:
    """The fingerprint of a synthetic source: its name and what its rows are drawn from."""
    return {
        "kind": "synthetic",
        "source": source,
        "seed": int(seed),
        "n_samples": int(n_samples),
        "noise": float(noise),
    }


def describe(fingerprint: dict | None) -> str:
    """One phrase for messages, e.g. '1234 bytes, 50 rows, sha256 1a2b3c4d5e6f…'."""
    if fingerprint is None:
        return "no fingerprint"
    if fingerprint.get("kind") == "csv":
        digest = str(fingerprint.get("sha256", ""))[:_SHOWN_DIGITS]
        return f"{fingerprint.get('bytes')} bytes, {fingerprint.get('rows')} rows, sha256 {digest}…"
    return ", ".join(f"{k} {v}" for k, v in sorted(fingerprint.items()) if k != "kind")
