"""Table II: pretext metrics and top-1 at joint-pretraining epochs 1, 5, 10, 20, 50, 120. All trials share
one 120-epoch joint pretraining (same stage key) and finetune from its kept checkpoints. Epochs count joint
pretraining only, after branch pretraining; the paper counts from the start of pretraining (its Table II epoch 1
equals training from scratch). The table says which count it uses (analysis/specs.py, DESIGN.md).

    python studies/pretext_correlation.py --smoke
"""
from trainables.study import StudySpec, main

EPOCHS = [1, 5, 10, 20, 50, 120]

STUDY = StudySpec(
    name="pretext_correlation",
    title="Table II",
    base={"train.joint_epochs": 120, "train.checkpoint_epochs": tuple(EPOCHS)},
    grid={"eval.pretrain_epoch": EPOCHS},
    smoke_base={"train.joint_epochs": 2, "train.checkpoint_epochs": (1, 2)},
    smoke_grid={"eval.pretrain_epoch": [1, 2]},
)

if __name__ == "__main__":
    main(STUDY)
