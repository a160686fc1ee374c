"""Table V: top-1 by the video generating objective: reconstruct (L_r), predict (L_p) or both.

    python studies/generation_target.py --smoke
    python studies/generation_target.py --finetune-data ucf101:/data/UCF101 --finetune-data hmdb51:/data/HMDB51 \
        --finetune-data ssv2:/data/SSv2
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="generation_target",
    title="Table V",
    grid={"loss.generation_target": ["reconstruct", "predict", "both"]},
    smoke_grid={"loss.generation_target": ["reconstruct", "both"]},
)

if __name__ == "__main__":
    main(STUDY)
