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


def manifest_matches(index: DatasetIndex, cache: Path) -> bool:
    """True when the cache's manifest has one row per video of `index`, with the same labels and splits."""
    manifest = cache / "manifest.parquet"
    if not manifest.is_file() or not (cache / "classes.json").is_file():
        return False
    df = pd.read_parquet(manifest, columns=["key", "label", "split"])
    want = [(e.key, e.label, e.split) for e in index.entries]
    return list(zip(df.key, df.label, df.split)) == want


def ensure_prepared(spec: str, cache_size: int, cache_root: str = "", workers: int | None = None,
                    address: str | None = None, split: int = 1) -> Path:
    """Prepare `spec` unless its cache is complete; return the cache folder (safe across processes)."""
    from filelock import FileLock

    from csvr.prepare import prepare

    cache = cache_dir_for(spec, cache_size, cache_root)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.parent / f"{cache.name}.lock")):
        index = read_dataset(spec, split)
        if not manifest_matches(index, cache):
            prepare(index, cache, cache_size, workers, address)
    return cache
