"""The manifest of a sharded checkpoint: typed, checked, and the plan of what a rank reads.

A manifest names the current generation, the rank count, the config, and for
every entry its whole shape, dtype, role and the pieces `[rank, lo, hi)` of its
flat elements that each rank file holds. Read back, every field is checked, the
pieces of each entry must cover it exactly once (no gap, no overlap, no shift),
and a rank reads only the pieces that overlap its own places (`plan`).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, NamedTuple

from adagrad_native._dtypes import resolve_dtype
from adagrad_native.distributed._places import ROLES

FORMAT = 2
MANIFEST = "manifest.json"
_GENERATION = re.compile(r"gen-\d{6}")


class Entry(NamedTuple):
    """One state entry of a checkpoint: its whole shape and where its pieces are."""

    shape: tuple[int, ...]
    dtype: str
    role: str
    pieces: list[tuple[int, int, int]]  # (rank, lo, hi), sorted by lo

    @property
    def size(self) -> int:
        """The number of elements of the whole entry."""
        return math.prod(self.shape)


class Manifest(NamedTuple):
    """A checked manifest."""

    generation: str
    ranks: int
    config: dict[str, Any] | None
    entries: dict[str, Entry]

    def to_json(self) -> str:
        """The manifest as its file holds it."""
        return json.dumps(
            {
                "format": FORMAT,
                "generation": self.generation,
                "ranks": self.ranks,
                "config": self.config,
                "entries": {
                    key: {
                        "shape": list(e.shape),
                        "dtype": e.dtype,
                        "role": e.role,
                        "pieces": [list(p) for p in e.pieces],
                    }
                    for key, e in self.entries.items()
                },
            }
        )


def rank_file(path: str, generation: str, rank: int) -> str:
    """Where rank `rank` of a generation keeps its part."""
    return os.path.join(path, generation, f"rank-{rank:05d}.npz")


def read(path: str) -> Manifest | None:
    """The checked manifest of a checkpoint folder (None when it has none).

    Raises:
        ValueError: Naming the field that is missing, of the wrong type or out of
            range, or the entry whose pieces leave a gap, overlap or run past it.
    """
    try:
        with open(os.path.join(path, MANIFEST), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"its {MANIFEST} is not valid JSON ({err})") from err
    return checked(raw)


def checked(raw: Any) -> Manifest:
    """A manifest's fields, each checked (see `read`)."""
    if not isinstance(raw, dict):
        raise ValueError(f"its {MANIFEST} holds {type(raw).__name__}, not an object")
    if raw.get("format") != FORMAT:
        raise ValueError(
            f"its {MANIFEST} has format {raw.get('format')!r}; this version reads format {FORMAT}"
        )
    generation, ranks = raw.get("generation"), raw.get("ranks")
    if not isinstance(generation, str) or not _GENERATION.fullmatch(generation):
        raise ValueError(f"its {MANIFEST} names the generation {generation!r}, not gen-NNNNNN")
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise ValueError(f"its {MANIFEST} gives {ranks!r} ranks; expected an integer >= 1")
    config = raw.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"its {MANIFEST} has a config of type {type(config).__name__}")
    entries_raw = raw.get("entries")
    if not isinstance(entries_raw, dict):
        raise ValueError(f"its {MANIFEST} has no entries")
    entries = {str(k): _entry(str(k), v, ranks) for k, v in entries_raw.items()}
    return Manifest(generation, ranks, config, entries)


def _entry(key: str, raw: Any, ranks: int) -> Entry:
    what = f"entry {key!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not an object")
    shape, dtype, role, pieces = (raw.get(k) for k in ("shape", "dtype", "role", "pieces"))
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise ValueError(f"{what} has the shape {shape!r}; expected a list of integers >= 0")
    try:
        resolve_dtype(dtype)
    except (TypeError, ImportError) as err:
        raise ValueError(f"{what} has the dtype {dtype!r} ({err})") from err
    if role not in ROLES:
        raise ValueError(f"{what} has the role {role!r}; expected one of {ROLES}")
    if not isinstance(pieces, list) or not all(
        isinstance(p, list) and len(p) == 3 and all(_is_count(n) for n in p) for p in pieces
    ):
        raise ValueError(f"{what} lists its pieces as {pieces!r:.100}; expected [rank, lo, hi]")
    entry = Entry(tuple(shape), str(dtype), str(role), sorted(tuple(p) for p in pieces))
    _check_cover(what, entry, ranks)
    return entry


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _check_cover(what: str, entry: Entry, ranks: int) -> None:
    """The pieces cover [0, size) exactly once, from ranks that exist."""
    at = 0
    for rank, lo, hi in (p for p in entry.pieces if p[2] > p[1]):
        if rank >= ranks:
            raise ValueError(f"{what} has a piece from rank {rank}, but the manifest has {ranks}")
        if lo != at:
            kind = "a gap" if lo > at else "an overlap"
            raise ValueError(f"{what} has {kind} at element {min(lo, at)} (rank {rank}'s piece)")
        at = hi
    if at != entry.size:
        raise ValueError(f"{what} covers {at} of its {entry.size} elements")


class Read(NamedTuple):
    """One piece a rank reads: from which rank file, its range, where it goes in the place."""

    rank: int
    lo: int  # the piece's range in the whole entry
    hi: int
    offset: int  # where the piece starts in the file's flat array


def plan(entry: Entry, lo: int, hi: int) -> list[Read]:
    """The pieces of `entry` that overlap the place `[lo, hi)` (a load reads only these)."""
    reads = []
    for rank, p_lo, p_hi in entry.pieces:
        a, b = max(lo, p_lo), min(hi, p_hi)
        if a < b:
            reads.append(Read(rank, a, b, a - p_lo))
    return reads
