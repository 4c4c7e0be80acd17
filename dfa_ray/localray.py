"""A private local Ray for one process's own use (the test suite, the benchmarks, a script):
its own temp dir, so that it can be stopped together with every process it started and with
nothing else on the machine (never `ray stop`, never a kill by process name)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Iterator


def end_processes_mentioning(marker: str, sig: int = signal.SIGKILL) -> int:
    """Signal every process (but this one) whose command line or environment mentions `marker`,
    a temp dir unique to one Ray: the processes of that Ray and nothing else. Returns how many."""
    ended = 0
    me = os.getpid()
    needle = marker.encode()
    for pid_text in os.listdir("/proc"):
        if not pid_text.isdigit() or int(pid_text) == me:
            continue
        try:
            cmdline = Path(f"/proc/{pid_text}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid_text}/environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_text), sig)
                ended += 1
    return ended


@contextlib.contextmanager
def private_ray(prefix: str, num_cpus: int | None = None, log_level: str = "WARNING",
                log_to_driver: bool = True, num_gpus: int | None = None) -> Iterator[float]:
    """Start a local Ray in this process with a fresh temp dir (`prefix...` under the system
    temp dir); yields the seconds it took to start. Afterwards Ray is shut down, every process
    mentioning the temp dir is ended and the temp dir (session logs) is removed."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix=prefix)
    start = time.perf_counter()
    # num_gpus: logical GPUs a simulated cluster declares (benchmarks/cluster_schedule.py)
    ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, _temp_dir=temp_dir,
             log_to_driver=log_to_driver, logging_config=ray.LoggingConfig(log_level=log_level))
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()
        end_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
