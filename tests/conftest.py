import os

# as in jobs/cli.py: torch's OpenMP spin-waiting is very slow on a shared 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
