"""`python -m csvr.bench context`: does the context branch learn, and does f_s carry the scene?

Per seed (`--seeds N`, train.seed 0..N-1): the context stage alone for `train.context_epochs` epochs (the
study's own stage, `csvr.stages.pretrain.pretrain_stage`, without probes), then on the held-out split:
  context_acc   Eq. 2's matching in held-out batches (`losses.context_accuracy`, candidates = the batch's
                I-frames), averaged over 5 fixed shuffles of the held-out clips into batches of data.batch_size
  all_way       the same with every held-out video's I-frames as candidates (chance 1 / videos)
  knn_context   k-NN top-1 of f_s on the "context" class group (train split = gallery, `eval.knn_k`)
  knn_random    the same for this seed's V-network at its random initialisation
Last row: mean [95 % t interval] over seeds, the k-NN difference paired by seed. Chance, and raw-pixel matching
(the clip's mean frame against each I-frame, a reference that keeps pixel positions) in the headline.

    python -m csvr.bench context --seeds 5                                # the tiny preset (60 context epochs)
    python -m csvr.bench context --seeds 5 --set train.context_epochs=20  # the old tiny (DESIGN.md)
"""
from __future__ import annotations

import json
import time

import torch

from csvr import evaluation as E
from csvr import losses as L
from csvr.bench.common import Report, bench_config

CPU = torch.device("cpu")
SHUFFLES = 5
KEYS = ("clip", "iframes", "iframe_mask")


def held_out_shuffles(clips: dict, batch_size: int, shuffles: int = SHUFFLES) -> list[dict]:
    """`shuffles` fixed permutations of the held-out clips cut into batches (the last one may be short)."""
    n, out = len(clips["clip"]), []
    for s in range(shuffles):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(s))
        out += [{k: clips[k][order[i:i + batch_size]] for k in KEYS} for i in range(0, n, batch_size)]
    return out


@torch.no_grad()
def matching(embed, batches: list[dict], every: dict) -> tuple[float, float]:
    """(mean accuracy over `batches`, accuracy with every clip of `every` as a candidate); `embed(b) -> (x, z)`."""
    per_batch = torch.stack([L.context_accuracy(*embed(b), b["iframe_mask"]) for b in batches]).mean()
    return float(per_batch), float(L.context_accuracy(*embed(every), every["iframe_mask"]))


def knn_group(cfg, model, cache, classes: list[dict], group: str) -> float:
    """k-NN top-1 of f_s (the pooled V-network + g^V) on one class group, train split = gallery."""
    from csvr.evaluate_trial import split_features
    from csvr.training.finetune import VideoFeature

    feature = VideoFeature(model.context.video_net, model.context.video_head, cfg.model.feature_dim)
    (gx, gy), (qx, qy) = split_features(feature, cfg, cache, CPU)
    probs = E.knn_scores(qx, gx, gy, len(classes), cfg.eval.knn_k, cfg.eval.knn_temperature)
    rec = E.recognition(probs, qy, len(classes))
    return E.group_accuracy(rec["per_class"], [c.get("group") for c in classes]).get(group, float("nan"))


def train_context(cfg, cache) -> torch.nn.Module:
    """A fresh model of `cfg` after the context stage alone: the study's own stage (`pretrain_stage`), no probe."""
    import tempfile
    from pathlib import Path

    from csvr.config import apply_overrides
    from csvr.models.build import build_model, load_parts
    from csvr.stages.pretrain import pretrain_stage

    cfg = apply_overrides(cfg, {"eval.probe_every": 0})
    with tempfile.TemporaryDirectory() as out:
        for _ in pretrain_stage("context", cfg, cache, {}, Path(out), "bench", CPU):
            pass
        model = build_model(cfg)
        load_parts(model, Path(out) / "model.pt")
    return model


def bench_context(args) -> Report:
    from analysis.stats import t_interval
    from analysis.tables import interval_text
    from csvr.config import apply_overrides
    from csvr.data.loaders import prepared, train_batches
    from csvr.models.build import build_model

    torch.set_num_threads(max(args.threads, 1))
    base = bench_config(args, "tiny")
    cache = prepared(base.data.source, base)
    classes = json.loads((cache / "classes.json").read_text())
    held = list(train_batches(cache, base, base.data.batch_size, train=False, split="test")(0))
    every = {k: torch.cat([b[k] for b in held]) for k in KEYS}
    batches = held_out_shuffles(every, base.data.batch_size)
    pixels = matching(lambda b: E.pixel_embeddings(b["clip"], b["iframes"]), batches, every)
    chance = float(torch.stack([L.context_chance(b["iframe_mask"]) for b in batches]).mean())
    rows = []
    for seed in range(max(args.seeds, 1)):
        start = time.perf_counter()
        cfg = apply_overrides(base, {"train.seed": seed})
        random = build_model(cfg)  # the network the stage starts from (build_model seeds each part)
        model = train_context(cfg, cache)
        model.eval()
        acc, all_way = matching(lambda b: (model.context.video_features(b["clip"])[1],
                                           model.context.iframe_embedding(b["iframes"])), batches, every)
        knn, knn_random = knn_group(cfg, model, cache, classes, "context"), knn_group(cfg, random, cache, classes,
                                                                                      "context")
        rows.append({"seed": seed, "context_acc": acc, "all_way": all_way, "knn_context": knn,
                     "knn_random": knn_random, "knn_gain": knn - knn_random, "seconds": time.perf_counter() - start})
    n, clips = len(rows), len(every["clip"])
    summary = {k: t_interval([100 * r[k] for r in rows]) for k in ("context_acc", "all_way", "knn_gain")}
    columns = ("context_acc", "all_way", "knn_context", "knn_random", "knn_gain")
    rows.append({"seed": f"mean (n={n})", **{k: sum(r[k] for r in rows) / n for k in columns}})
    headline = (f"context accuracy {interval_text(summary['context_acc'])} % (chance {100 * chance:.1f}, raw pixels "
                f"{100 * pixels[0]:.1f}); all-way {interval_text(summary['all_way'])} % (chance {100 / clips:.1f}, raw "
                f"pixels {100 * pixels[1]:.1f}); k-NN of f_s on the context classes minus random init "
                f"{interval_text(summary['knn_gain'])} points (paired by seed, n = {n}, {clips} held-out clips)")
    return Report("context", ["seed", "context_acc", "all_way", "knn_context", "knn_random", "knn_gain", "seconds"],
                  rows, headline,
                  numbers={"context_acc": summary["context_acc"].mean, "knn_gain": summary["knn_gain"].mean,
                           "chance": chance, "pixels": pixels[0]},
                  settings={"source": base.data.source, "context_epochs": base.train.context_epochs, "seeds": n})

