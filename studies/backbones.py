"""Tables VI and VIII: recognition top-1 and retrieval R@k by V-network backbone. The pretraining dataset
(--data ucf101:... or kinetics400:...) is the table's second row key.

    python studies/backbones.py --smoke
    python studies/backbones.py --data kinetics400:/data/K400 --finetune-data ucf101:/data/UCF101 \
        --finetune-data hmdb51:/data/HMDB51
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="backbones",
    title="Tables VI and VIII",
    grid={"model.backbone": ["c3d", "r2plus1d", "r3d", "s3d"]},
    smoke_grid={"model.backbone": ["r3d", "s3d"]},
)

if __name__ == "__main__":
    main(STUDY)
