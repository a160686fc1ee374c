"""Reads the studies' runs from MLflow and rebuilds the paper's tables and figures.

    python -m analysis.tables STUDY [--mlflow-uri URI] [--format md|latex|csv] [--out DIR]
    python -m analysis.figures STUDY [--mlflow-uri URI] [--out DIR]
    python -m analysis.compare RUN_A RUN_B [--dataset DS] [--mlflow-uri URI] [--out DIR]
    python -m analysis.paper          # the paper's reported numbers

Which params and metrics form each study's table: analysis/specs.py (SPECS).
"""
