"""Table IV: top-1 by the contrastive loss of the context branch (L2, InfoNCE, MI-InfoNCE), finetuning
from f_s.

    python studies/context_loss.py --smoke
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="context_loss",
    title="Table IV",
    base={"eval.feature_source": "f_s"},
    grid={"loss.context": ["l2", "infonce", "mi_infonce"]},
    smoke_grid={"loss.context": ["l2", "mi_infonce"]},
)

if __name__ == "__main__":
    main(STUDY)
