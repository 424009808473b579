"""Entry points: the `shopllm` command line, the torchrun trainer and the nightly job.

Importing the package sets the thread policy every entry point needs, before torch loads (see
`shopllm.threads`).
"""

import os

from shopllm.threads import openmp_wait_policy

os.environ.update(openmp_wait_policy(os.environ))
