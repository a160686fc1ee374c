"""Where a dataset's prepared cache lives, and preparing it on first use.

    from csvr.data.sources import ensure_prepared
    cache = ensure_prepared("synthetic", cache_size=64)   # prepares once, then returns at once
    # cache / "manifest.parquet", cache / "videos", cache / "poses", cache / "classes.json"

The cache folder is `<cache_root or $CSVR_HOME/cache>/<kind>-<hash of the resolved dataset path>-<size>`;
the videos and poses in it do not depend on the split, the manifest's split column does (a different
split rewrites the manifest, which is fast: no video is redone).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from csvr import paths
from csvr.data.layouts import DatasetIndex, parse_spec, read_dataset


def cache_dir_for(spec: str, cache_size: int, cache_root: str = "") -> Path:
    """The cache folder of dataset `spec` (KIND:PATH) prepared at short side `cache_size`."""
    kind, path = parse_spec(spec)
    where = str(path.resolve()) if path else f"default@{paths.csvr_home().resolve()}"
    digest = hashlib.sha1(f"{kind}:{where}".encode()).hexdigest()[:8]
    root = Path(cache_root).expanduser() if cache_root else paths.cache_dir()
    return root / f"{kind}-{digest}-{cache_size}"


COLUMNS = ["key", "label", "split", "source_size", "source_mtime_ns"]


def manifest_matches(index: DatasetIndex, cache: Path) -> bool:
    """True when the cache's manifest has one row per video of `index`, with the same labels and splits,
    prepared from the files as they are now (same size and mtime). An unreadable manifest or classes.json
    (a crash while copying the cache, a truncated file) does not match: prepare rebuilds it."""
    from csvr.prepare import source_stat

    manifest = cache / "manifest.parquet"
    try:
        df = pd.read_parquet(manifest, columns=COLUMNS)
        json.loads((cache / "classes.json").read_text())
        now = [(e.key, e.label, e.split, *source_stat(e.path).values()) for e in index.entries]
    except Exception:  # missing, truncated or foreign files (pyarrow raises several types): rebuild
        return False
    return [tuple(row) for row in df[COLUMNS].itertuples(index=False)] == now


class CacheError(ValueError):
    """An explicit cache folder (data.cache, --cache) holds no prepared cache; the message says what to run."""


def explicit_cache(spec: str, cache: str, cache_size: int) -> Path:
    """The folder `python -m csvr.prepare --cache DIR` wrote; refused when it holds nothing prepared (a typo
    would otherwise prepare the whole dataset again into a new folder)."""
    path = Path(cache).expanduser()
    if not (path / "manifest.parquet").is_file() and not (path / "done").is_dir():
        raise CacheError(f"data.cache={cache}: {path} holds no prepared cache (no manifest.parquet); prepare it "
                         f"with `python -m csvr.prepare --data {spec} --cache {cache} --size {cache_size}` "
                         "or drop --cache")
    return path


def ensure_prepared(spec: str, cache_size: int, cache_root: str = "", workers: int | None = None,
                    address: str | None = None, split: int = 1, cache: str = "") -> Path:
    """Prepare `spec` unless its cache is complete; return the cache folder (safe across processes).
    `cache` names the folder explicitly (data.cache); it is completed (resumed) there if needed."""
    from filelock import FileLock

    from csvr.prepare import prepare

    cache = explicit_cache(spec, cache, cache_size) if cache else cache_dir_for(spec, cache_size, cache_root)
    if manifest_matches(read_dataset(spec, split), cache):  # complete: no lock (the cache may be read-only)
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.parent / f"{cache.name}.lock")):
        index = read_dataset(spec, split)
        if not manifest_matches(index, cache):
            prepare(index, cache, cache_size, workers, address)
    return cache
