"""Prefect tasks wrapping the hammer_core stages (retries, artifacts); see tasks.stages."""

from tasks.stages import eval_task, export_task, ingest_task, prepare_task, register_task, train_task

__all__ = ["ingest_task", "prepare_task", "train_task", "export_task", "eval_task", "register_task"]
