"""``changesync serve --workers N``: N serving processes on one port, so one machine uses its cores.

Each worker is a whole service (an edge of the hub, and a candidate for the watcher's lease) that
binds the port with SO_REUSEPORT; the kernel spreads new connections over them. This process only
supervises: it starts the workers, starts again one that dies (after a pause that grows while they
keep dying young), and passes SIGTERM / SIGINT on to all of them. A worker whose supervisor
disappeared (kill -9) stops by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from .settings import Settings

logger = logging.getLogger(__name__)

# A worker that ran this long was healthy: the next one that dies is started again at once.
HEALTHY_AFTER_S = 30.0
RESTART_DELAY_MAXIMUM_S = 30.0
# How often the supervisor looks at its workers, and a worker at its supervisor.
WATCH_INTERVAL_S = 0.5
# After the stop signal, how long the workers have (their graceful shutdown takes 5 s) before SIGKILL.
STOP_TIMEOUT_S = 15.0


def run_workers(settings: Settings) -> int:
    """Supervise ``settings.workers`` processes until a signal stops them; the exit status."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, tuple[BaseProcess, float]] = {}
    delays = dict.fromkeys(range(settings.workers), 0.0)
    restart_at: dict[int, float] = {}
    try:
        logger.info("starting %d workers on %s:%d", settings.workers, settings.host, settings.port)
        for index in range(settings.workers):
            workers[index] = (_start(context, settings, index), time.monotonic())
        while not stopping.wait(WATCH_INTERVAL_S):
            now = time.monotonic()
            for index, (process, started_at) in list(workers.items()):
                if process.is_alive():
                    continue
                del workers[index]
                delays[index] = (
                    0.0
                    if now - started_at >= HEALTHY_AFTER_S
                    else min(RESTART_DELAY_MAXIMUM_S, max(1.0, delays[index] * 2))
                )
                restart_at[index] = now + delays[index]
                logger.warning(
                    "worker %d (pid %s) exited with %s; starting it again in %.0f s",
                    index,
                    process.pid,
                    process.exitcode,
                    delays[index],
                )
            for index, at in list(restart_at.items()):
                if at <= now:
                    del restart_at[index]
                    workers[index] = (_start(context, settings, index), now)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all([process for process, _ in workers.values()])
    return 0


def _start(context: multiprocessing.context.SpawnContext, settings: Settings, index: int) -> BaseProcess:
    process = context.Process(
        target=_worker, args=(settings, os.getpid()), name=f"changesync-worker-{index}", daemon=False
    )
    process.start()
    return process


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("worker pid %s did not stop in %.0f s: killed", process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.join()


def _worker(settings: Settings, supervisor_pid: int) -> None:
    from .logs import configure_logging
    from .server import serve

    configure_logging(settings.log)
    os.setpgrp()  # a terminal's Ctrl-C reaches only the supervisor, which passes one SIGTERM on
    threading.Thread(target=_follow_supervisor, args=(supervisor_pid,), daemon=True).start()
    serve(settings, reuse_port=True)


def _follow_supervisor(supervisor_pid: int) -> None:
    """Stop this worker (gracefully) once its supervisor is gone."""
    while os.getppid() == supervisor_pid:
        time.sleep(WATCH_INTERVAL_S)
    os.kill(os.getpid(), signal.SIGTERM)
