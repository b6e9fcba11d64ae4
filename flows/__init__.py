"""Prefect flows composing the tasks; `flows.pipeline.hammer_pipeline` is the whole pipeline."""
