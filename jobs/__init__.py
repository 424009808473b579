"""Entry points: the `shopllm` command line, the torchrun trainer and the nightly job.

Importing the package sets the thread policy every entry point needs, before torch loads: OpenMP threads
spin-wait between torch ops by default, which on a shared or small machine makes training steps up to 10x
slower; passive waiting costs little when the machine is idle.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
