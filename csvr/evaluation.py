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


def retrieval_hits(query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor,
                   ks: Iterable[int]) -> dict[str, Tensor]:
    """Per test query, 1 if a same-class train video is among its k nearest (cosine): {"retrieval_r<k>": (Q,)}."""
    sim = nn.functional.normalize(query, dim=1) @ nn.functional.normalize(gallery, dim=1).T  # (Q, G)
    order = sim.argsort(dim=1, descending=True)
    hits = gallery_labels[order] == query_labels[:, None]  # (Q, G)
    return {f"retrieval_r{k}": hits[:, :k].any(1).float() for k in ks}


def retrieval(query: Tensor, query_labels: Tensor, gallery: Tensor, gallery_labels: Tensor,
              ks: Iterable[int]) -> dict[str, float]:
    """R@k of test queries against the train gallery, cosine similarity (the mean of `retrieval_hits`)."""
    return {name: float(hit.mean()) for name, hit in retrieval_hits(query, query_labels, gallery, gallery_labels,
                                                                     ks).items()}


@torch.no_grad()
def knn_scores(query: Tensor, gallery: Tensor, gallery_labels: Tensor, classes: int, k: int,
               temperature: float = 0.07) -> Tensor:
    """DINO's weighted k-NN classifier on frozen features: the k most cosine-similar gallery items vote for
    their class with weight exp(sim / temperature). Returns (Q, classes) normalised votes."""
    sim = nn.functional.normalize(query.float(), dim=1) @ nn.functional.normalize(gallery.float(), dim=1).T  # (Q, G)
    top, idx = sim.topk(min(k, len(gallery)), dim=1)  # (Q, k)
    votes = torch.zeros(len(query), classes).scatter_add_(1, gallery_labels[idx], (top / temperature).exp())
    return votes / votes.sum(1, keepdim=True)


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, classes: int, seed: int,
                 epochs: int = 300, weight_decay: float = 1e-3) -> Tensor:
    """A linear classifier on frozen, standardised features (full-batch L-BFGS on cross-entropy + L2).
    Returns (Q, classes) test probabilities."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x, q = (train_x.float() - mean) / std, (test_x.float() - mean) / std
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * 0.01)
        fc.bias.zero_()
    opt = torch.optim.LBFGS(fc.parameters(), lr=1.0, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(fc(x), train_y) + weight_decay * fc.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return fc(q).softmax(-1)


def group_accuracy(per_class: np.ndarray, groups: list[str | None]) -> dict[str, float]:
    """Mean per-class accuracy within each class group (the paper's Fig. 4 groups: motion, context, both)."""
    out = {}
    for group in sorted({g for g in groups if g}):
        accs = [a for a, g in zip(per_class, groups) if g == group and not np.isnan(a)]
        if accs:
            out[group] = float(np.mean(accs))
    return out


@torch.no_grad()
def mean_frame_of(loader: Iterable[dict]) -> Tensor:
    """The mean frame (3, H, W) of every clip frame a (held-out, unaugmented) loader yields: the output of the best
    generator that ignores its condition (under L2), i.e. the unconditional baseline of Eqs. 6-7."""
    total, count = 0.0, 0
    for batch in loader:
        clip = batch["clip"].float()  # (B, 3, T, H, W)
        total = total + clip.sum(dim=(0, 2)).cpu()
        count += clip.shape[0] * clip.shape[2]
    return total / max(count, 1)


@torch.no_grad()
def pretext_metrics(model: CSVR, loader: Iterable[dict], is_classifier: nn.Module | None,
                    device: torch.device, train_mean: Tensor | None = None) -> dict[str, float]:
    """Table II's pretext metrics on held-out clips (no augmentation), each beside its trivial baseline:
    pose_mse vs pose_mse_copy_last / pose_mse_const_velocity (same joints, same mask); video_l2_reconstruct
    and video_l2_predict vs video_l2_mean_frame / video_l2_mean_frame_future (every frame = the current
    clip's mean frame, an oracle that holds the clip's exact background) and, given `train_mean` (the train
    split's mean frame, `mean_frame_of`), vs video_l2_train_mean / video_l2_train_mean_future (the unconditional
    generator: every frame = the train split's mean frame; a generator that does not beat it ignores f_i);
    context_acc vs context_chance, and context_acc_pixels (the same matching by raw pixels: the clip's mean frame
    against each I-frame, a reference that keeps every pixel's position, which Eq. 2's pooled embeddings drop, not
    a bar for them); video_l2_person, the reconstruct L2 inside the person's box, vs video_l2_person_train_mean
    (no person there) and video_l2_person_mean_frame (the person blurred over the clip), `person_values`. A branch
    that does not beat its baseline has not learned. Each batch's value counts with its number of clips (the last
    batch may be short), so the means do not depend on how the clips were batched, except context matching's,
    whose candidates are the batch's I-frames; a batch without a visible person adds nothing to the person ones."""
    model.eval()
    sums: dict[str, list[Tensor]] = {}
    counts: dict[str, int] = {}
    probs = []
    mean = None if train_mean is None else train_mean.to(device)[None, :, None]  # (1, 3, 1, H, W)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        values, reconstruction = _pretext_batch(model, batch, mean)
        for name, value in values.items():  # weighted by the batch's clips: a mean over clips, whatever the order
            sums.setdefault(name, []).append(value.float() * len(batch["clip"]))
            counts[name] = counts.get(name, 0) + len(batch["clip"])
        if is_classifier is not None:
            is_classifier.eval()
            probs.append(is_classifier({"clip": reconstruction, "poses": batch["poses"],
                                        "pose_mask": batch["pose_mask"]}).softmax(-1).float().cpu())
    out = {name: float(torch.stack(values).sum() / counts[name]) for name, values in sums.items()}
    out["pose_mse_x100"] = 100 * out["pose_mse"]  # Table II's scale
    if probs:
        out["video_is"] = L.inception_score(torch.cat(probs))
    return out


def _pretext_batch(model: CSVR, batch: dict, train_mean: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
    """One held-out batch: every pretext metric and its baselines, and the reconstructed clips (the IS samples)."""
    poses, mask = batch["poses"], batch["pose_mask"]
    future, fmask = batch["future_poses"], batch["future_pose_mask"]
    t_future = future.shape[1]
    v_map, f_s = model.context.video_features(batch["clip"])
    z = model.context.iframe_embedding(batch["iframes"])
    pred, f_d = model.pose_generator(poses, mask)  # one encoder pass gives P_gen and f_d
    f_i = model.integration(f_d, f_s, v_map)
    clip, future_clip = batch["clip"], batch["future"]
    reconstruction = model.reconstructor.generator(f_i)
    return {
        "context_acc": L.context_accuracy(f_s, z, batch["iframe_mask"]),
        "context_chance": L.context_chance(batch["iframe_mask"]),
        "context_acc_pixels": L.context_accuracy(*pixel_embeddings(clip, batch["iframes"]), batch["iframe_mask"]),
        "pose_mse": L.pose_mse(pred, future, fmask),
        "pose_mse_copy_last": L.pose_mse(L.copy_last_pose(poses, mask, t_future), future, fmask),
        "pose_mse_const_velocity": L.pose_mse(L.constant_velocity_pose(poses, mask, t_future), future, fmask),
        "video_l2_reconstruct": L.pixel_l2(reconstruction, clip),
        "video_l2_predict": L.pixel_l2(model.predictor.generator(f_i), future_clip),
        "video_l2_mean_frame": L.pixel_l2(L.mean_frame(clip), clip),
        "video_l2_mean_frame_future": L.pixel_l2(L.mean_frame(clip, future_clip.shape[2]), future_clip),
        **unconditional(train_mean, clip, future_clip),
        **person_values(reconstruction, clip, poses, mask, train_mean),
    }, reconstruction


def pixel_embeddings(clip: Tensor, iframes: Tensor) -> tuple[Tensor, Tensor]:
    """Raw pixels as context matching's embeddings: the clip's mean frame (B, 3HW) and each I-frame (B, K, 3HW)."""
    return clip.mean(2).flatten(1), iframes.flatten(2)


def unconditional(train_mean: Tensor | None, clip: Tensor, future_clip: Tensor) -> dict[str, Tensor]:
    """The unconditional generator's L2 (every frame = the train split's mean frame), when it is given."""
    if train_mean is None:
        return {}
    return {"video_l2_train_mean": L.pixel_l2(train_mean.expand_as(clip), clip),
            "video_l2_train_mean_future": L.pixel_l2(train_mean.expand_as(future_clip), future_clip)}


def person_values(reconstruction: Tensor, clip: Tensor, poses: Tensor, mask: Tensor,
                  train_mean: Tensor | None = None) -> dict[str, Tensor]:
    """The reconstruct L2 inside the person's box (`losses.person_region` of the clip's poses) beside the clip's
    mean frame there (which holds the person blurred over the clip) and, given it, the train split's mean frame
    there (which holds no person): does the generator draw the person where the person is? {} without a person."""
    region = L.person_region(poses, mask, clip.shape[-1])
    pairs = {"video_l2_person": reconstruction, "video_l2_person_mean_frame": L.mean_frame(clip)}
    if train_mean is not None:
        pairs["video_l2_person_train_mean"] = train_mean.expand_as(clip)
    values = {name: L.region_pixel_l2(pred, clip, region) for name, pred in pairs.items()}
    return {name: value for name, value in values.items() if value is not None}
