"""What a nightly run needs to be safe to kill and rerun: a lock under `--out` and per-stage markers.

- `RunLock`: one run at a time per output root. The lock file holds the owner's pid, host and start
  time; a lock whose process is gone (same host) is stale and is taken over, with a message.
- Stage markers `state/dt=D/<stage>.json` are written after a stage has published everything; a rerun
  for the same date skips the stages that have one (unless forced) and resumes at the first without.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from shopllm.errors import ShopllmError
from shopllm.storage import write_json

log = logging.getLogger(__name__)

LOCK_FILE = ".shopllm.lock"
STATE_DIR = "state"


class LockedError(ShopllmError):
    """Another run holds the lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, out: str | os.PathLike, what: str = "nightly"):
        self.path = Path(out) / LOCK_FILE
        self.what = what
        self.took_over: dict | None = None

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": self.what,
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner.get("host") == me["host"] and owner.get("pid") and not _pid_alive(int(owner["pid"])):
                    log.warning(
                        "taking over a stale lock %s from pid %s (started %s), which is no longer running",
                        self.path,
                        owner.get("pid"),
                        owner.get("started"),
                    )
                    self.took_over = owner
                    self.path.unlink(missing_ok=True)
                    continue
                if not owner:  # half-written by a process killed while creating it
                    age = time.time() - self.path.stat().st_mtime
                    if age > 60:
                        log.warning("taking over an unreadable lock %s (%.0f s old)", self.path, age)
                        self.path.unlink(missing_ok=True)
                        continue
                raise LockedError(
                    f"another run holds {self.path} (pid {owner.get('pid')} on {owner.get('host')}, "
                    f"started {owner.get('started')}); wait for it, or remove the file if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise LockedError(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self._owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def stage_marker(out: str | os.PathLike, date: str, stage: str) -> Path:
    return Path(out) / STATE_DIR / f"dt={date}" / f"{stage}.json"


def stage_done(out: str | os.PathLike, date: str, stage: str) -> bool:
    return stage_marker(out, date, stage).exists()


def mark_done(out: str | os.PathLike, date: str, stage: str, seconds: float) -> None:
    write_json(
        stage_marker(out, date, stage),
        {"stage": stage, "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )


def clear_stages(out: str | os.PathLike, date: str) -> None:
    folder = Path(out) / STATE_DIR / f"dt={date}"
    if folder.is_dir():
        for p in folder.glob("*.json"):
            p.unlink()
