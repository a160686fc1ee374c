"""Ray Tune trainable, MLflow tracking and the shared study runner (see trainables/study.py)."""
