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


def write_eval_artifacts(folder: Path, rec: dict, ret: dict, classes: list[dict]) -> list[Path]:
    """per_class.csv (class_index, class_name, group, accuracy, support), confusion.png, retrieval.json."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"class_index": [c["index"] for c in classes], "class_name": [c["name"] for c in classes],
                          "group": [c.get("group") for c in classes], "accuracy": rec["per_class"],
                          "support": rec["support"]})
    table.to_csv(folder / "per_class.csv", index=False)
    fig, ax = plt.subplots(figsize=(max(4, len(classes) * 0.35), max(3.5, len(classes) * 0.3)))
    ax.imshow(rec["confusion"], cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"top-1 {rec['top1']:.3f}")
    if len(classes) <= 30:
        names = [c["name"] for c in classes]
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=100)
    plt.close(fig)
    write_json(folder / "retrieval.json", ret)
    return [folder / "per_class.csv", folder / "confusion.png", folder / "retrieval.json"]


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
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.2 * len(rows)))
    titles = ["real clip", "reconstructed", "real future", "predicted future"]
    for j, (ax, img) in enumerate(zip(np.atleast_1d(axes), rows)):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(titles[j % 4], fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(folder / "generated.png", dpi=100)
    plt.close(fig)
    poses, _ = model.pose_generator(b["poses"], b["pose_mask"])
    fig, axes = plt.subplots(1, len(poses), figsize=(4 * len(poses), 4), squeeze=False)
    for ax, p, real, m in zip(axes[0], poses.cpu(), b["future_poses"].cpu(), b["future_pose_mask"].cpu()):
        ax.scatter(real[..., 0][m], real[..., 1][m], s=6, c="tab:blue", label="real")
        ax.scatter(p[..., 0].flatten(), p[..., 1].flatten(), s=6, c="tab:orange", alpha=0.5, label="predicted")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "poses.png", dpi=100)
    plt.close(fig)
    return [folder / "generated.png", folder / "poses.png"]
