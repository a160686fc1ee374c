"""Fig. 3: top-1 over the Eq. 9 weights sigma_p x sigma_c in {0.5, 0.75, 1.0, 1.25}^2 (16 trials per seed),
or an Optuna TPE search over [0.5, 1.25]^2.

    python studies/sigma_grid.py --smoke
    python studies/sigma_grid.py --search optuna --num-samples 20 [--resume]
    python -m analysis.tables sigma_grid
"""
from trainables.study import StudySpec, main

SIGMAS = [0.5, 0.75, 1.0, 1.25]

STUDY = StudySpec(
    name="sigma_grid",
    title="Fig. 3",
    grid={"loss.sigma_p": SIGMAS, "loss.sigma_c": SIGMAS},
    smoke_grid={"loss.sigma_p": [0.75, 1.0], "loss.sigma_c": [0.75]},
    search_space={"loss.sigma_p": (0.5, 1.25), "loss.sigma_c": (0.5, 1.25)},
)

if __name__ == "__main__":
    main(STUDY)
