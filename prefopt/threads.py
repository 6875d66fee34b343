"""CPU thread policy: use the cores this process actually gets, and never let OpenMP workers spin.

Two OpenMP workers on two cores that another job also uses spin-wait for each other and run a tiny
training step 5–30× slower (measured on the project's 2-core machine: 56 ms quiet, 402 ms next to one
busy process). prefopt therefore

* sizes torch's intra-op pool to the cores that are free when the command starts (the CPU affinity
  mask and cgroup quota, minus the cores other processes keep busy, sampled from ``/proc/stat``), and
* shortens libgomp's spin before a waiting worker sleeps (``GOMP_SPINCOUNT``), so a job that starts
  later costs a fair share of the cores instead of a spin storm.

Overrides, strongest first: the ``--threads N`` flag, ``PREFOPT_THREADS``, ``OMP_NUM_THREADS``.
The environment part only acts when it runs before torch is first imported (the CLI calls
:func:`prepare_environment` first thing); :func:`configure_threads` can run at any time.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: libgomp spins this many iterations before a waiting worker sleeps (its default is 300,000).
SPIN_COUNT = "1000"


def prepare_environment() -> None:
    """Set the OpenMP wait behaviour for this process and its children (no-op where already set)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def allowed_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota)) if quota else max(1, cores)


def _cgroup_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except OSError:
        return None
    if len(text) != 2 or text[0] == "max":
        return None
    return max(1, math.ceil(int(text[0]) / int(text[1])))


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(sample_s: float = 0.2) -> float:
    """How many cores other processes keep busy right now (0 when it cannot be measured)."""
    first = _cpu_times()
    if first is None:
        return 0.0
    time.sleep(sample_s)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return 0.0
    share = (second[0] - first[0]) / (second[1] - first[1])
    return share * (os.cpu_count() or 1)


def choose_threads(cores: int, busy: float) -> int:
    """Threads for ``cores`` allowed cores of which ``busy`` are taken: the free ones, at least one."""
    return max(1, min(cores, int(cores - busy + 0.5)))


_AUTO: int | None = None  # the automatic choice, measured once per process


def configure_threads(requested: int | None = None, default: int | None = None) -> int:
    """Set torch's CPU threads by the policy above and return the number chosen.

    Order: ``requested`` (the ``--threads`` flag), then ``PREFOPT_THREADS`` / ``OMP_NUM_THREADS``, then a
    command's own ``default`` (``prefopt demo``: 1), then the free cores.
    """
    global _AUTO
    import torch

    source = "flag"
    if requested is None or requested <= 0:
        for name in ("PREFOPT_THREADS", "OMP_NUM_THREADS"):
            value = os.environ.get(name, "").strip()
            if value.isdigit() and int(value) > 0:
                requested, source = int(value), name
                break
    if (requested is None or requested <= 0) and default is not None and default > 0:
        requested, source = default, "the command's default"
    if (requested is None or requested <= 0) and _AUTO is not None:
        requested, source = _AUTO, "auto, measured earlier in this process"
    if requested is None or requested <= 0:
        cores = allowed_cores()
        busy = busy_cores() if cores > 1 else 0.0
        requested = _AUTO = choose_threads(cores, busy)
        source = f"auto: {cores} cores, {busy:.1f} busy"
    if torch.get_num_threads() != requested:
        torch.set_num_threads(requested)
    log.debug("torch CPU threads: %d (%s)", requested, source)
    return requested
