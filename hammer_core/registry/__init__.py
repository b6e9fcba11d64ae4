"""The register stage: the MLflow run, the registered model version, the champion gate, the served model."""
