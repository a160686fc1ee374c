"""Table I: top-1 by the feature that initialises finetuning (scratch, f_d, f_s, f_i with AdaIN, concat,
full), finetuned on every --finetune-data dataset; each pretrained feature also at its random initialisation
(eval.pretrained=false), the baseline a frozen-feature protocol needs. A second table splits accuracy by class
group (motion / context / both, Fig. 4).

    python studies/feature_source.py --smoke
    python studies/feature_source.py --seeds 5 --set eval.protocol=knn         # what each branch is for
    python studies/feature_source.py --data ucf101:/data/UCF101 \
        --finetune-data ucf101:/data/UCF101 --finetune-data hmdb51:/data/HMDB51
"""
from trainables.study import StudySpec, main

SOURCES = ["scratch", "f_d", "f_s", "f_i_adain", "f_i_concat", "f_i_full"]

STUDY = StudySpec(
    name="feature_source",
    title="Table I",
    grid={"eval.feature_source": SOURCES, "eval.pretrained": [True, False]},
    smoke_grid={"eval.feature_source": ["scratch", "f_i_full"], "eval.pretrained": [True]},
)

if __name__ == "__main__":
    main(STUDY)
