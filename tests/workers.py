"""Functions that tests hand to spawned worker processes (multiprocessing "spawn" pools).

A spawned worker imports the module its function lives in: from a test module that is the whole module with
its imports (torch, Ray, the pipeline; ~5 s per worker on 2 busy cores), from here only what the function
needs (~0.2 s for the stage store). Used by tests/test_pipeline.py.
"""
from __future__ import annotations

import time
from pathlib import Path


def compute_stage_once(root: str, log: str) -> str:
    """One "trial" asking the stage store for stage ("pose", "k"); computing it takes a second and is logged.
    Returns the stage's status in this process: computed or reused."""
    from csvr.stages.store import StageStore, finish

    store = StageStore(Path(root))

    def compute(out: Path):
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        yield finish(out, "pose", "k", 1.0)

    return [e for e in store.run("pose", "k", compute) if e["kind"] == "stage"][0]["status"]

