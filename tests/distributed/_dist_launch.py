"""Start real ``gloo`` process groups on the loopback interface, bounded in time.

``launch(worker, world_size, *args)`` runs ``worker(rank, world_size, *args)`` in
``world_size`` spawned processes after ``init_process_group("gloo")`` on 127.0.0.1 and a
free port; an exception in any rank fails the call with that rank's traceback, and a
run that outlives ``timeout`` is killed and fails. A rank killed by a signal (gloo aborts
now and then when four ranks share two cores) is not a test outcome: the whole launch is
run once more, and a second such crash fails.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any, Callable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, worker: Callable[..., Any], world: int, port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      OMP_NUM_THREADS="1", POLYPARAM_NUM_THREADS="1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        worker(rank, world, *args)
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def launch(worker: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0) -> None:
    import torch.multiprocessing as mp

    try:
        _launch_once(worker, world, *args, timeout=timeout)
    except mp.ProcessExitedException as exc:
        if exc.exit_code is None or exc.exit_code >= 0:   # a rank that exited with an error: a real failure
            raise
        _launch_once(worker, world, *args, timeout=timeout)   # a rank killed by a signal: the transport, once


def _launch_once(worker: Callable[..., Any], world: int, *args: Any, timeout: float) -> None:
    import torch.multiprocessing as mp

    context = mp.start_processes(_entry, args=(worker, world, free_port(), args), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{worker.__name__} on {world} ranks ran past {timeout} s")
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
