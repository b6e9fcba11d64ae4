"""Which failures a stage retries: transient ones (I/O, network, registry), never data or config errors.

``orchestration.retries`` and ``orchestration.retry_delay_seconds`` (backoff; the last delay
repeats) set how often and when; :func:`retry_condition` decides whether a failure is worth
another try. A bad row, a bad config or a failed training run fails the same way every time,
so those fail at once, with their message.
"""

from __future__ import annotations

import urllib.error
from typing import Any

from hammer_core.config import ConfigError, PipelineConfig
from hammer_core.train.distributed import TrainingError
from hammer_core.data.row_errors import RowError

#: Failures that retrying cannot fix (checked first: a ConfigError is a ValueError, a missing
#: input file an OSError).
PERMANENT: tuple[type[BaseException], ...] = (
    ConfigError, RowError, TrainingError, ValueError, TypeError, KeyError, AttributeError, AssertionError,
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (urllib, requests, httpx, MLflow), if any."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    if type(exc).__module__.startswith("mlflow"):
        getter = getattr(exc, "get_http_status_code", None)
        if callable(getter):
            return int(getter())
    return None


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on a retry: connection errors, timeouts, other I/O
    errors, HTTP 5xx / 429 answers and registry (MLflow) server errors; False for data and
    config errors (:data:`PERMANENT`) and anything unknown."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # the cause chain: MLflow wraps connection errors
        seen.add(id(cur))
        status = _http_status(cur)
        if status is not None:
            return status >= 500 or status == 429
        if isinstance(cur, PERMANENT):
            return False
        if isinstance(cur, (ConnectionError, TimeoutError, OSError)):
            return True
        if type(cur).__name__ == "RegistryUnavailable":  # hammer_core.mlflow_store: server down (transient)
            return bool(getattr(cur, "transient", True))  # or a local store that cannot be written (not)
        cur = cur.__cause__ or cur.__context__
    return False


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure :func:`is_transient`."""
    data = state.data
    if not isinstance(data, BaseException):
        try:
            data = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - an unreadable failure is not worth a retry
            return False
    return isinstance(data, BaseException) and is_transient(data)


def retry_options(cfg: PipelineConfig) -> dict[str, Any]:
    """``Task.with_options`` arguments of a stage from ``orchestration``."""
    o = cfg.orchestration
    return {"retries": o.retries, "retry_delay_seconds": list(o.retry_delay_seconds) or 0,
            "retry_condition_fn": retry_condition}
