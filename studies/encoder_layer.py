"""Table III: top-1 by the G_p encoder layer (2, 4, 6) that gives f_d, finetuning from f_d.

    python studies/encoder_layer.py --smoke
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="encoder_layer",
    title="Table III",
    base={"eval.feature_source": "f_d"},
    grid={"model.pose_encoder_layer": [2, 4, 6]},
    smoke_grid={"model.pose_encoder_layer": [2, 6]},
)

if __name__ == "__main__":
    main(STUDY)
