"""Files a trial leaves for people: per-class CSV, confusion matrix, retrieval JSON, sample images.

Written into the trial's artifact folder; the Ray trainable uploads them to the trial's MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from csvr.data.dataset import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_eval_artifacts(folder: Path, rec: dict, ret: dict, classes: list[dict], probs: torch.Tensor | None = None,
                         labels: torch.Tensor | None = None, hits: dict[str, torch.Tensor] | None = None) -> list[Path]:
    """per_class.csv (class_index, class_name, group, accuracy, support), per_video.csv (video, label,
    prediction, correct, confidence and, with `hits`, retrieval_r<k> = 1 if the video's k nearest train videos
    hold its class: one row per test video, in test-split order; what analysis/ bootstraps over), confusion.png,
    retrieval.json."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"class_index": [c["index"] for c in classes], "class_name": [c["name"] for c in classes],
                          "group": [c.get("group") for c in classes], "accuracy": rec["per_class"],
                          "support": rec["support"]})
    table.to_csv(folder / "per_class.csv", index=False)
    files = [folder / "per_class.csv"]
    if probs is not None and labels is not None:
        files.append(write_per_video(folder / "per_video.csv", probs, labels, hits or {}))
    files.append(plot_confusion(folder / "confusion.png", rec, [c["name"] for c in classes]))
    files.append(write_json(folder / "retrieval.json", ret))
    return files


def write_per_video(path: Path, probs: torch.Tensor, labels: torch.Tensor,
                    hits: dict[str, torch.Tensor] | None = None) -> Path:
    """probs (V, classes), labels (V,), per-video retrieval hits {"retrieval_r<k>": (V,)} -> one row per test video."""
    confidence, pred = probs.max(1)
    pd.DataFrame({"video": np.arange(len(labels)), "label": labels.numpy(), "prediction": pred.numpy(),
                  "correct": (pred == labels).int().numpy(), "confidence": confidence.numpy().round(6),
                  **{name: hit.int().numpy() for name, hit in (hits or {}).items()}}
                 ).to_csv(path, index=False)
    return path


def plot_confusion(path: Path, rec: dict, names: list[str]) -> Path:
    """Counts in every cell (rows = true class), titled with top-1 and the test-set size."""
    confusion = np.asarray(rec["confusion"])
    k = len(names)
    fig, ax = plt.subplots(figsize=(max(4, k * 0.45 + 1.5), max(3.5, k * 0.4 + 1.2)))
    image = ax.imshow(confusion, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="test videos")
    if k <= 30:
        for (i, j), count in np.ndenumerate(confusion):
            light = count > confusion.max() / 2
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if light else "black")
        ax.set_xticks(range(k), names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), names, fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix: top-1 {100 * rec['top1']:.1f} % on {int(confusion.sum())} test videos "
                 f"(chance {100 / max(k, 1):.1f} %)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _to_image(video: torch.Tensor) -> np.ndarray:
    """(3, T, S, S) normalised -> (S, T*S, 3) uint8 strip of frames."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    frames = (video.float().cpu() * std + mean).clamp(0, 1)
    return (frames.permute(2, 1, 3, 0).flatten(1, 2).numpy() * 255).astype(np.uint8)


@torch.no_grad()
def write_samples(folder: Path, model, batch: dict, device: torch.device, count: int = 2) -> list[Path]:
    """generated.png: real vs reconstructed vs predicted frames; poses.png: predicted vs real future poses."""
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    b = {k: v[:count].to(device) for k, v in batch.items() if torch.is_tensor(v)}
    feats = model.features(b["clip"], b["poses"], b["pose_mask"])
    recon, pred = model.reconstructor.generator(feats["f_i"]), model.predictor.generator(feats["f_i"])
    rows = []
    for i in range(len(b["clip"])):
        rows += [_to_image(b["clip"][i]), _to_image(recon[i]), _to_image(b["future"][i]), _to_image(pred[i])]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.3 * len(rows) + 0.6))
    titles = ["real clip", "reconstructed (G_r)", "real future", "predicted future (G_p)"]
    frames = b["clip"].shape[2]
    for j, (ax, img) in enumerate(zip(np.atleast_1d(axes), rows)):
        ax.imshow(img)
        ax.set_yticks([])
        ax.set_xticks([(t + 0.5) * img.shape[0] for t in range(frames)], [str(t) for t in range(frames)],
                      fontsize=5)
        ax.set_ylabel(f"video {j // 4}", fontsize=6)
        ax.set_title(titles[j % 4], fontsize=7, loc="left")
    np.atleast_1d(axes)[-1].set_xlabel("frame (left to right in time)", fontsize=7)
    fig.suptitle("Generated videos: real vs reconstructed clip, real vs predicted future", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "generated.png", dpi=100)
    plt.close(fig)
    poses, _ = model.pose_generator(b["poses"], b["pose_mask"])
    fig, axes = plt.subplots(1, len(poses), figsize=(4 * len(poses), 4), squeeze=False)
    for i, (ax, p, real, m) in enumerate(zip(axes[0], poses.cpu(), b["future_poses"].cpu(),
                                             b["future_pose_mask"].cpu())):
        ax.scatter(real[..., 0][m], real[..., 1][m], s=6, c="tab:blue", label="real future pose")
        ax.scatter(p[..., 0][m], p[..., 1][m], s=6, c="tab:orange", alpha=0.5,
                   label="predicted (G_p)")  # the joints and frames the pose MSE scores (undetected ones left out)
        ax.invert_yaxis()
        ax.set_xlabel("x (fraction of crop width)")
        ax.set_ylabel("y (fraction of crop height, down)")
        ax.set_title(f"video {i}: detected joints, all future frames", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Future 2D poses: real vs predicted", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "poses.png", dpi=100)
    plt.close(fig)
    return [folder / "generated.png", folder / "poses.png"]
