"""Evaluation: recognition (top-1, per-class accuracy, confusion matrix), retrieval R@k, pretext metrics.

Recognition and retrieval read `EvalClips` batches: each video gives N clips by a sliding window
(clip (B, N, 3, T, S, S)); scores and features are averaged over a video's clips.
Retrieval (Section IV-B): test videos query the train gallery by cosine similarity of the pretrained
representation; R@k is the fraction of queries with a same-class video among the k nearest.
Pretext metrics (Table II): context-matching top-1, pose MSE x 100 and the inception score of the
reconstructor's videos. The IS classifier is the study's supervised "scratch" classifier (Table I's
training-from-scratch model of the same V-network, trained on the labelled train split), in the spirit
of TGAN's use of a C3D classifier trained on UCF101.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from csvr import losses as L
from csvr.models.csvr import CSVR


def _flatten_clips(batch: dict, device: torch.device) -> tuple[dict, int, int]:
    """(B, N, ...) tensors -> (B*N, ...)."""
    b, n = batch["clip"].shape[:2]
    flat = {k: v.flatten(0, 1).to(device) for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 1}
    return flat, b, n


@torch.no_grad()
def _per_video(fn, loader: Iterable[dict], device: torch.device) -> tuple[Tensor, Tensor]:
    """fn((B*N) clips) -> (B*N, D), averaged over each video's N clips: (V, D) and (V,) labels."""
    outs, labels = [], []
    for batch in loader:
        flat, b, n = _flatten_clips(batch, device)
        outs.append(fn(flat).view(b, n, -1).mean(1).float().cpu())
        labels.append(batch["label"])
    return torch.cat(outs), torch.cat(labels)


def video_scores(model: nn.Module, loader: Iterable[dict], device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean softmax over each video's clips: (V, classes) probabilities and (V,) labels."""
    model.eval()
    return _per_video(lambda clips: model(clips).softmax(-1), loader, device)


def video_features(feature: nn.Module, loader: Iterable[dict], device: torch.device) -> tuple[Tensor, Tensor]:
    """Mean feature over each video's clips: (V, D) and (V,) labels."""
    feature.eval()
    return _per_video(feature, loader, device)


def recognition(probs: Tensor, labels: Tensor, classes: int) -> dict:
    """top-1, mean per-class accuracy, per-class accuracy and support, confusion matrix (rows = truth)."""
    pred = probs.argmax(1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), pred.numpy()), 1)
    support = confusion.sum(1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return {"top1": float((pred == labels).float().mean()), "mean_class_acc": float(np.nanmean(per_class)),
            "per_class": per_class, "support": support, "confusion": confusion}


def retrieval(query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor,
              ks: Iterable[int]) -> dict[str, float]:
    """R@k of test queries against the train gallery, cosine similarity."""
    sim = nn.functional.normalize(query, dim=1) @ nn.functional.normalize(gallery, dim=1).T  # (Q, G)
    order = sim.argsort(dim=1, descending=True)
    hits = gallery_labels[order] == query_labels[:, None]  # (Q, G)
    return {f"retrieval_r{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


@torch.no_grad()
def pretext_metrics(model: CSVR, loader: Iterable[dict], is_classifier: nn.Module | None,
                    device: torch.device) -> dict[str, float]:
    """Table II's pretext metrics on held-out clips (ClipDataset batches, no augmentation)."""
    model.eval()
    acc, mse, probs = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        f_s = model.context.video_embedding(batch["clip"])
        z = model.context.iframe_embedding(batch["iframes"])
        acc.append(L.context_accuracy(f_s, z, batch["iframe_mask"]))
        pred, f_d_full = model.pose_generator(batch["poses"], batch["pose_mask"])
        mse.append(L.pose_mse(pred, batch["future_poses"], batch["future_pose_mask"]))
        if is_classifier is not None:
            f_i = model.integration(model.pose_generator.motion_feature(batch["poses"], batch["pose_mask"]), f_s)
            fake = model.reconstructor.generator(f_i)
            is_classifier.eval()
            probs.append(is_classifier({"clip": fake, "poses": batch["poses"],
                                        "pose_mask": batch["pose_mask"]}).softmax(-1).float().cpu())
    out = {"context_acc": float(torch.stack(acc).mean()), "pose_mse_x100": 100 * float(torch.stack(mse).mean())}
    if probs:
        out["video_is"] = L.inception_score(torch.cat(probs))
    return out
