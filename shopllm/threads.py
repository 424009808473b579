"""How torch's OpenMP threads wait between ops: set before torch loads (jobs/__init__.py does it).

By default GNU OpenMP spins ~300k rounds before a thread sleeps. On a machine whose cores other processes
also want, those spinning threads take the cores from the threads with work, and training steps ran up
to 10x slower. Fully passive waiting (`OMP_WAIT_POLICY=PASSIVE`) fixes that but puts a thread to sleep
between every two ops: decoding a description runs thousands of small ops per item, each then waits on a
futex wake-up, and describing ran at 80 items/s against 150 with spinning (2-core CPU). A short spin,
`GOMP_SPINCOUNT=1000`, keeps most of both: 130 items/s describing, training as fast as passive with two
trainers sharing two cores and ~8% faster alone (docs/benchmarks.md, "OpenMP waiting").

A policy the user set (either variable) is left alone.
"""

from __future__ import annotations

SPIN_COUNT = "1000"


def openmp_wait_policy(environ) -> dict[str, str]:
    """The variables to add to `environ` (none where it names a policy already)."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    return {"GOMP_SPINCOUNT": SPIN_COUNT}
