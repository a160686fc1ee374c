"""The numbers the CSVR paper reports (Zhang et al., IEEE TIFS 2025), transcribed from Section IV of
/work/shared/paper/CSVR.md. Accuracies and recalls are in %.

    python -m analysis.paper          # prints every table below

Keys use the platform's own names, so a table cell is found without a renaming layer:
rows are config values (`eval.feature_source`, `model.backbone`, ...) and columns are the dataset kinds
of the metric names (`eval/<dataset>/top1`). `tests/test_analysis.py` checks every CSVR number here
against the markdown.

Two inconsistencies in the paper itself:
- Table I and Table V give f_i (full) as 90.4 / 56.6; the text after Table II says "90.3% and 56.5%".
- Fig. 3 is an image: the text gives only its best cell, sigma_p = sigma_c = 0.75; its value is taken
  from Table V (L_r & L_p on UCF101 = 90.4), the run the paper reports as its final setting.
"""
from __future__ import annotations

PAPER_DATASETS = ("ucf101", "hmdb51", "ssv2", "kinetics400")
RECALL_KS = (1, 5, 10, 20)
SIGMA_SEARCH_RANGE = (0.5, 1.25)  # Section IV-C: "a grid search ... within a range of 0.5 - 1.25"

# Table I: feature used to initialise finetuning (eval.feature_source) -> dataset -> top-1 (%).
# R(2+1)D, pretrained on UCF101.
TABLE_I = {
    "scratch": {"ucf101": 65.0, "hmdb51": 32.5},
    "f_d": {"ucf101": 75.1, "hmdb51": 38.4},
    "f_s": {"ucf101": 73.1, "hmdb51": 40.2},
    "f_i_adain": {"ucf101": 81.0, "hmdb51": 46.3},
    "f_i_concat": {"ucf101": 75.2, "hmdb51": 41.7},
    "f_i_full": {"ucf101": 90.4, "hmdb51": 56.6},
}

# Table II: pretext metric -> eval.pretrain_epoch -> value. All on UCF101.
# Pose MSE is x100 in the paper ("increased by a factor of 100"), hence the metric name.
TABLE_II = {
    "pretext/context_acc": {1: 36.3, 5: 47.0, 10: 49.9, 20: 52.9, 50: 52.0, 120: 63.9},
    "pretext/pose_mse_x100": {1: 32.0, 5: 16.0, 10: 5.0, 20: 4.2, 50: 3.4, 120: 2.9},
    "pretext/video_is": {1: 1.4, 5: 8.2, 10: 9.3, 20: 11.9, 50: 14.6, 120: 15.1},
    "eval/ucf101/top1": {1: 65.0, 5: 72.0, 10: 82.4, 20: 83.5, 50: 88.3, 120: 89.6},
}
TABLE_II_EPOCHS = (1, 5, 10, 20, 50, 120)

# Table III: G_p encoder layer giving f_d (model.pose_encoder_layer) -> dataset -> top-1 (%).
TABLE_III = {
    2: {"ucf101": 72.0, "hmdb51": 36.9},
    4: {"ucf101": 74.5, "hmdb51": 37.2},
    6: {"ucf101": 75.1, "hmdb51": 38.4},
}

# Table IV: contrastive loss for f_s (loss.context) -> dataset -> top-1 (%).
TABLE_IV = {
    "l2": {"ucf101": 70.2, "hmdb51": 33.4},
    "infonce": {"ucf101": 72.5, "hmdb51": 40.2},
    "mi_infonce": {"ucf101": 73.1, "hmdb51": 40.2},
}

# Table V: video generating objective (loss.generation_target) -> dataset -> top-1 (%).
TABLE_V = {
    "reconstruct": {"ucf101": 89.2, "hmdb51": 54.6, "ssv2": 56.1},  # L_r
    "predict": {"ucf101": 89.9, "hmdb51": 56.6, "ssv2": 55.3},  # L_p
    "both": {"ucf101": 90.4, "hmdb51": 56.6, "ssv2": 59.2},  # L_r & L_p
}

# Fig. 3: loss.sigma_p -> loss.sigma_c -> UCF101 top-1 (%). The figure is an image; the text gives only
# the best cell (sigma_p = sigma_c = 0.75). Its value is Table V's final setting (90.4), not read off Fig. 3.
FIG_3 = {0.75: {0.75: 90.4}}
FIG_3_BEST = (0.75, 0.75)

# Table VI, CSVR rows: (model.backbone, pretraining dataset) -> dataset -> top-1 (%).
# All 200 epochs, 112 x 112, 16 frames.
TABLE_VI = {
    ("c3d", "ucf101"): {"ucf101": 88.3, "hmdb51": 52.3},
    ("s3d", "ucf101"): {"ucf101": 88.1, "hmdb51": 54.9},
    ("r2plus1d", "ucf101"): {"ucf101": 90.4, "hmdb51": 56.6},
    ("r3d", "ucf101"): {"ucf101": 89.6, "hmdb51": 60.7},
    ("c3d", "kinetics400"): {"ucf101": 92.8, "hmdb51": 62.8},
    ("s3d", "kinetics400"): {"ucf101": 90.2, "hmdb51": 61.2},
    ("r2plus1d", "kinetics400"): {"ucf101": 92.8, "hmdb51": 64.0},
    ("r3d", "kinetics400"): {"ucf101": 94.5, "hmdb51": 65.5},
}

# Table VI, other methods: (method, backbone, pretrain, epochs, resolution, clip length, UCF101, HMDB51).
TABLE_VI_OTHERS = (
    ("DSM [29]", "C3D", "UCF101", 200, 112, 16, 70.3, 40.5),
    ("CoCLR [155]", "S3D", "UCF101", 700, 128, 32, 81.4, 52.1),
    ("MSCL [1]", "S3D", "UCF101", 200, 128, 32, 83.7, 53.8),
    ("DCM [160]", "R(2+1)D", "UCF101", 120, 112, 16, 79.7, 48.6),
    ("VCL [3]", "R(2+1)D", "UCF101", 200, 112, 16, 82.1, 49.7),
    ("TCLR [69]", "R3D", "UCF101", 400, 112, 16, 82.4, 52.9),
    ("MSCL [1]", "R3D", "UCF101", 600, 112, 16, 86.7, 58.9),
    ("Vi2CLR [161]", "S3D", "UCF101", 300, 112, 16, 82.8, 52.9),
    ("DCM [160]", "C3D", "Kinetics-400", 120, 112, 16, 83.4, 52.9),
    ("CoCLR [155]", "S3D", "Kinetics-400", 500, 128, 32, 87.9, 54.6),
    ("VideoMoCo [14]", "R(2+1)D", "Kinetics-400", 200, 112, 32, 78.7, 49.2),
    ("DCM [160]", "R(2+1)D", "Kinetics-400", 120, 112, 16, 85.7, 54.0),
    ("FAME [153]", "R(2+1)D", "Kinetics-400", 200, 112, 16, 84.8, 53.5),
    ("VCL [3]", "R(2+1)D", "Kinetics-400", 100, 112, 16, 86.1, 54.8),
    ("TCLR [69]", "R3D", "Kinetics-400", 100, 112, 16, 84.1, 53.6),
    ("TE [18]", "R3D", "Kinetics-400", 200, 128, 16, 87.1, 63.6),
    ("DynamoNet [162]", "STCNet*", "Kinetics-400", 200, 112, 16, 88.1, 59.9),
    ("Vi2CLR [161]", "S3D", "Kinetics-400", 300, 112, 16, 89.1, 55.7),
    ("MSCL [1]", "R3D", "Kinetics-400", 400, 112, 16, 90.7, 62.3),
    ("KnowledgeGuide [167]", "C3D", "Kinetics-400", 400, 112, 16, 82.7, 47.0),
    ("KnowledgeGuide [167]", "R(2+1)D", "Kinetics-400", 400, 112, 16, 82.4, 46.7),
)

# Table VII, CSVR row: (model.backbone, pretraining dataset) -> dataset -> top-1 (%) on SSv2.
TABLE_VII = {("r2plus1d", "kinetics400"): {"ssv2": 59.2}}

# Table VII, other methods: (method, backbone, pretrain, epochs, resolution or None, clip length, top-1).
TABLE_VII_OTHERS = (
    ("VideoMoCo [14]", "R(2+1)D", "Kinetics-400", 200, 112, 32, 19.5),
    ("rhoMoCo [65]", "SlowFast-R50", "Kinetics-400", 200, 224, 16, 54.4),
    ("CORP [166]", "I3D", "Kinetics-400", 800, None, 16, 48.8),
    ("SVT [165]", "ViT-B", "Kinetics-400", 20, 224, 16, 59.2),
)

# Table VIII, CSVR rows: model.backbone -> dataset -> k -> R@k (%). Pretrained on Kinetics-400, 200 epochs.
TABLE_VIII = {
    "r2plus1d": {"ucf101": {1: 64.4, 5: 80.2, 10: 87.8, 20: 93.1},
                 "hmdb51": {1: 34.1, 5: 57.2, 10: 71.0, 20: 81.4}},
    "r3d": {"ucf101": {1: 64.2, 5: 79.5, 10: 88.2, 20: 92.9},
            "hmdb51": {1: 34.5, 5: 59.0, 10: 71.8, 20: 82.2}},
}
TABLE_VIII_PRETRAIN = "kinetics400"

# Table VIII, other methods: (method, backbone, epochs, UCF101 R@1,5,10,20, HMDB51 R@1,5,10,20); None = "-".
TABLE_VIII_OTHERS = (
    ("TCGL [16]", "R(2+1)D", 300, (21.5, 39.3, 49.3, 59.5), (10.5, 27.6, 39.7, 55.6)),
    ("MCN [158]", "R(2+1)D", 500, (52.5, 69.5, 77.9, 83.1), (23.7, 46.5, 58.9, 72.4)),
    ("MotionFit [2]", "R(2+1)D", 120, (61.6, 75.6, None, 85.5), (29.4, 46.5, None, 66.7)),
    ("DualVar [7]", "R3D", 200, (46.7, 63.1, 69.7, 78.0), (None, None, None, None)),
    ("MSCL [1]", "R3D", 400, (63.7, 79.1, 84.0, None), (32.6, 58.5, 70.5, None)),
    ("KnowledgeGuide [167]", "R(2+1)D", 400, (52.6, 70.1, 77.4, 85.2), (22.2, 45.9, 59.9, 74.2)),
    ("KnowledgeGuide [167]", "C3D", 400, (49.9, 68.3, 77.4, 84.9), (22.4, 46.9, 60.3, 73.1)),
)

# Table IX: (method, backbone, GFLOPs, parameters in millions, UCF101 top-1 %). Pretrained on Kinetics-400.
TABLE_IX = (
    ("MoCo [124]", "C3D", 38.7, 33.4, 60.5),
    ("CoCLR [155]", "S3D", 36.0, 9.1, 87.9),
    ("SpeedNet [98]", "S3D", 36.5, 9.1, 81.1),
    ("rhoMoCo [65]", "SlowFast-R50", 83.5, 31.8, 92.8),
    ("CSVR", "C3D", 40.4, 33.4, 92.8),
    ("CSVR", "S3D", 37.7, 9.1, 90.2),
    ("CSVR", "R(2+1)D", 40.4, 15.4, 92.8),
)

# How the paper spells the platform's backbone names (Tables VI-IX).
BACKBONE_NAMES = {"c3d": "C3D", "s3d": "S3D", "r2plus1d": "R(2+1)D", "r3d": "R3D"}


def recognition() -> dict[tuple[str, str], dict[str, float]]:
    """Tables VI and VII merged: (backbone, pretrain dataset) -> dataset -> top-1 (%)."""
    merged = {row: dict(cells) for row, cells in TABLE_VI.items()}
    for row, cells in TABLE_VII.items():
        merged.setdefault(row, {}).update(cells)
    return merged


def retrieval() -> dict[tuple[str, str], dict[tuple[str, str], float]]:
    """Table VIII flattened: (backbone, pretrain dataset) -> (dataset, "retrieval_r<k>") -> R@k (%)."""
    return {
        (backbone, TABLE_VIII_PRETRAIN): {
            (ds, f"retrieval_r{k}"): value for ds, by_k in per_ds.items() for k, value in by_k.items()
        }
        for backbone, per_ds in TABLE_VIII.items()
    }


def main() -> None:
    tables = {"Table I": TABLE_I, "Table II": TABLE_II, "Table III": TABLE_III, "Table IV": TABLE_IV,
              "Table V": TABLE_V, "Fig. 3 (best cell only)": FIG_3, "Table VI": TABLE_VI,
              "Table VII": TABLE_VII, "Table VIII": TABLE_VIII}
    for name, table in tables.items():
        print(f"{name}:")
        for row, cells in table.items():
            print(f"  {row}: {cells}")
    print("Table IX:")
    for row in TABLE_IX:
        print(f"  {row}")


if __name__ == "__main__":
    main()
