"""Where the platform keeps what it generates: $CSVR_HOME (default ~/.cache/csvr).

    datasets/synthetic/   the embedded dataset (UCF101 layout), generated on first use
    cache/<name>-<size>/  prepared caches (see DESIGN.md)
"""
from __future__ import annotations

import os
from pathlib import Path


def csvr_home() -> Path:
    return Path(os.environ.get("CSVR_HOME", Path.home() / ".cache" / "csvr")).expanduser()


def datasets_dir() -> Path:
    return csvr_home() / "datasets"


def cache_dir() -> Path:
    return csvr_home() / "cache"
