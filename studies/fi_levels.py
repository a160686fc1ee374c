"""f_i at several levels (model.fi_levels, DESIGN.md "f_i at several levels"): how many of the V-network's maps
join the video generators (1 = Section III-D's one integration layer on the last map, the paper preset), and what
that does to the video branch's own metric (held-out L2 against the clip-mean-frame baselines) and to the frozen
feature downstream tasks read (pooled f_i of the last map). Not a paper ablation: the paper has one level.

    python studies/fi_levels.py --smoke
    python studies/fi_levels.py --seeds 3
    python -m analysis.tables fi_levels
"""
from trainables.study import StudySpec, main

STUDY = StudySpec(
    name="fi_levels",
    title="f_i levels",
    grid={"model.fi_levels": [1, 2, 3, 4]},
    smoke_grid={"model.fi_levels": [1, 3]},
)

if __name__ == "__main__":
    main(STUDY)
