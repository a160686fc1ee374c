"""Table I: top-1 by the feature that initialises finetuning (scratch, f_d, f_s, f_i with AdaIN, concat,
full), finetuned on every --finetune-data dataset.

    python studies/feature_source.py --smoke
    python studies/feature_source.py --data ucf101:/data/UCF101 \
        --finetune-data ucf101:/data/UCF101 --finetune-data hmdb51:/data/HMDB51
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="feature_source",
    title="Table I",
    grid={"eval.feature_source": ["scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"]},
    smoke_grid={"eval.feature_source": ["scratch", "f_i_full"]},
)

if __name__ == "__main__":
    main(STUDY)
