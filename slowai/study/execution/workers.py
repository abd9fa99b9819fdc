"""`--workers N`: N local processes of the same study command, one GPU or an equal share of CPU threads each."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

import torch


def start_workers(command: Sequence[str], n: int, assign_gpus: bool) -> list[subprocess.Popen]:
    """Start worker i as `command --workers 1 --worker-id i`, each in its own session: a terminal Ctrl-C reaches
    only this parent, which forwards it exactly once."""
    return [
        subprocess.Popen(
            [*command, "--workers", "1", "--worker-id", str(i)],
            env=worker_env(i, n, assign_gpus),
            start_new_session=True,
        )
        for i in range(n)
    ]


def worker_env(i: int, n: int, assign_gpus: bool) -> dict[str, str]:
    """Worker i's environment: one GPU each (round-robin over the visible ones), or an equal share of CPU threads."""
    env = dict(os.environ)
    if assign_gpus:
        visible = env.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(torch.cuda.device_count())))
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if ids:
            env["CUDA_VISIBLE_DEVICES"] = ids[i % len(ids)]
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // n))
    return env


def wait_workers(procs: list[subprocess.Popen]) -> list[int]:
    """Exit codes of all workers; on Ctrl-C each still running one gets SIGINT (it fails its trial cleanly) first."""
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
