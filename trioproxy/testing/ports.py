"""A free TCP port on loopback, for the servers tests and benchmarks start.

The port is probed, released, and bound by its server a moment later. It is drawn at random from
below the kernel's ephemeral range (32768-60999 by default on Linux), so no outgoing connection
and no bind to port 0 can take it meanwhile; under pytest-xdist each worker (gw0, gw1, ...) draws
from a slice of its own, so two workers of one run never pick the same port.
"""

import os
import random
import socket

LOWEST, BEYOND = 20_000, 32_768  # below Linux's default ephemeral range
SLICES = 8  # worker gwN draws from slice N % SLICES
_draw = random.SystemRandom()  # unaffected by tests that seed `random`


def worker_ports() -> range:
    """The ports this process draws from: its xdist worker's slice, else the whole range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return range(LOWEST, BEYOND)
    size = (BEYOND - LOWEST) // SLICES
    start = LOWEST + int(worker.removeprefix("gw")) % SLICES * size
    return range(start, start + size)


def free_port() -> int:
    """A port nothing listens on now; raises RuntimeError if 100 draws found none free."""
    ports = worker_ports()
    for _ in range(100):
        port = _draw.choice(ports)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
