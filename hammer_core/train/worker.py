"""Entry point of one training worker process: ``python -m hammer_core.train.worker --job J``.

Started by :func:`hammer_core.train.distributed.launch` through ``torchrun`` or the ``deepspeed``
launcher, which set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR``. The worker
joins the process group, runs :func:`hammer_core.train.trainer.run_worker` on the job file (the
validated config, the tokens artifact, the output folder) and leaves the group. An error is
printed with its traceback and makes the process exit non-zero; the launcher then stops the
other workers and :func:`~hammer_core.train.distributed.launch` reports the failure. If the launcher
itself dies (``SIGKILL``, a pre-empted node), the workers die with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from hammer_core.artifacts import atomic_write_json


def die_with_launcher() -> None:
    """Linux: get SIGKILL when the launcher dies (torchrun puts workers in their own session,
    so a killed launcher would otherwise leave them training on, orphaned)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def write_error(out_dir: Path, rank: int, err: BaseException) -> None:
    """Leave the failure where the launching process looks for it (see ``distributed.launch``)."""
    from hammer_core.train.distributed import error_path

    try:
        atomic_write_json(error_path(out_dir, rank), {"rank": rank, "type": type(err).__name__, "message": str(err)})
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hammer_core.train.worker", description=__doc__)
    ap.add_argument("--job", required=True, help="job.json written by hammer_core.train.distributed.launch")
    args = ap.parse_args(argv)
    die_with_launcher()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # torch deprecations raised inside DeepSpeed's collectives, once per call: not for users' eyes
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")

    from torch.distributed.elastic.multiprocessing.errors import record

    from hammer_core.train.distributed import init_process_group
    from hammer_core.train.trainer import run_worker

    @record
    def work() -> None:
        with open(args.job, encoding="utf-8") as f:
            job = json.load(f)
        rank, world = init_process_group()
        logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
                            force=True)
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        import torch.distributed as dist

        try:
            run_worker(job, rank, world)
        except BaseException as err:
            write_error(Path(job["out_dir"]), rank, err)
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
