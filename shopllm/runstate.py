"""What a nightly run needs to be safe to kill and rerun: a lock under `--out` and per-stage markers.

- `RunLock`: one run at a time per output root.
  - On a local disk, a lock file created with O_CREAT|O_EXCL holds the owner's pid, host and start time; a
    lock whose process is gone (same host) is stale and is taken over, with a message.
  - On object storage, a lease object created with a conditional PUT (`If-None-Match: *`) holds the owner's
    host, pid and an expiry; a thread renews it (`If-Match` on its ETag) while the run lives, and a run that
    finds it expired (or held by a dead process of its own host) takes it over the same way. A run that
    loses its lease stops at the next stage.
- Stage markers `state/dt=D/<stage>.json` are written after a stage has published everything; a rerun
  for the same date skips the stages that have one (unless forced) and resumes at the first without.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from shopllm import storage
from shopllm.errors import ShopllmError

log = logging.getLogger(__name__)

LOCK_FILE = ".shopllm.lock"
STATE_DIR = "state"
LEASE_SECONDS = 300.0  # an object-storage lease lives this long without renewal; renewed every third of it


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


def _dead_here(owner: dict) -> bool:
    """Whether the holder ran on this host and its process is gone (a killed run: no need to wait)."""
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and bool(pid) and not _pid_alive(int(pid))


def _holder(what: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "what": what,
    }


def _held_by(owner: dict, path: str) -> LockedError:
    return LockedError(
        f"another run holds {path} (pid {owner.get('pid')} on {owner.get('host')}, "
        f"started {owner.get('started')}); wait for it, or remove the file if that process is gone"
    )


def RunLock(out: str, what: str = "nightly", lease_seconds: float = LEASE_SECONDS):  # noqa: N802 (a factory)
    """The lock for `out`: a lock file on a local disk, a lease on object storage."""
    if storage.is_remote(str(out)):
        return Lease(storage.join(str(out), LOCK_FILE), what, lease_seconds)
    return FileLock(storage.join(str(out), LOCK_FILE), what)


class FileLock:
    def __init__(self, path: str, what: str = "nightly"):
        self.path = storage.local_path(path)
        self.what = what
        self.took_over: dict | None = None

    def _owner(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def acquire(self) -> FileLock:
        me = _holder(self.what)
        for _ in range(2):
            if storage.put_if_absent(self.path, json.dumps(me).encode()):
                return self
            owner = self._owner()
            if owner.get("host") == me["host"] and owner.get("pid") and not _pid_alive(int(owner["pid"])):
                log.warning(
                    "taking over a stale lock %s from pid %s (started %s), which is no longer running",
                    self.path,
                    owner.get("pid"),
                    owner.get("started"),
                )
                self.took_over = owner
                _unlink(self.path)
                continue
            if not owner:  # half-written by a process killed while creating it
                age = time.time() - os.stat(self.path).st_mtime
                if age > 60:
                    log.warning("taking over an unreadable lock %s (%.0f s old)", self.path, age)
                    _unlink(self.path)
                    continue
            raise _held_by(owner, self.path)
        raise LockedError(f"could not take the lock {self.path}")

    def check(self) -> None:
        """Nothing to check: a local lock cannot be taken from a living process."""

    def release(self) -> None:
        if self._owner().get("pid") == os.getpid():
            _unlink(self.path)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Lease:
    """A lease on object storage (S3): created with a conditional PUT, renewed while held, taken over once
    expired. `check()` raises LockedError if another run took it (this run's renewals stopped in time)."""

    def __init__(self, uri: str, what: str = "nightly", seconds: float = LEASE_SECONDS):
        self.uri, self.what, self.seconds = uri, what, seconds
        self.took_over: dict | None = None
        self.token = uuid.uuid4().hex
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self, started: str | None = None) -> bytes:
        me = {**_holder(self.what), "token": self.token, "expires": time.time() + self.seconds}
        if started:
            me["started"] = started
        return json.dumps(me).encode()

    def acquire(self) -> Lease:
        self._etag = storage.conditional_put(self.uri, self._body(), if_none_match=True)
        if self._etag is None:
            current = storage.head(self.uri)
            if current is None:  # released between our PUT and our read: try once more
                self._etag = storage.conditional_put(self.uri, self._body(), if_none_match=True)
            else:
                data, etag = current
                owner = _parse(data)
                if owner.get("expires", 0) > time.time() and not _dead_here(owner):
                    raise _held_by(owner, self.uri)
                self._etag = storage.conditional_put(self.uri, self._body(), if_match=etag)
                if self._etag is not None:
                    log.warning(
                        "taking over the lease %s of pid %s on %s (started %s), which expired or ended",
                        self.uri,
                        owner.get("pid"),
                        owner.get("host"),
                        owner.get("started"),
                    )
                    self.took_over = owner
        if self._etag is None:
            raise LockedError(f"could not take the lease {self.uri}: another run took it first")
        self._started = _parse(storage.head(self.uri)[0]).get("started")
        self._thread = threading.Thread(target=self._keep_renewing, name="lease-renewal", daemon=True)
        self._thread.start()
        return self

    def renew(self) -> bool:
        """Extend the lease by `seconds`; False (and the lease marked lost) if another run holds it now."""
        etag = storage.conditional_put(self.uri, self._body(self._started), if_match=self._etag)
        if etag is None:
            self._lost = f"the lease {self.uri} was taken over by another run"
            return False
        self._etag = etag
        return True

    def _keep_renewing(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.renew():
                    log.error("%s", self._lost)
                    return
            except Exception as e:  # a network blip: the next try may work before the lease expires
                log.warning("could not renew the lease %s: %s", self.uri, e)

    def check(self) -> None:
        if self._lost:
            raise LockedError(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = storage.head(self.uri)
        if current is not None and _parse(current[0]).get("token") == self.token:
            storage.delete(self.uri)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(data: bytes) -> dict:
    try:
        return json.loads(data)
    except ValueError:
        return {}


def stage_marker(out: str, date: str, stage: str) -> str:
    return storage.join(str(out), STATE_DIR, f"dt={date}", f"{stage}.json")


def stage_done(out: str, date: str, stage: str) -> bool:
    return storage.exists(stage_marker(out, date, stage))


def mark_done(out: str, date: str, stage: str, seconds: float) -> None:
    storage.write_json(
        stage_marker(out, date, stage),
        {"stage": stage, "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )


def clear_stages(out: str, date: str) -> None:
    for marker in storage.list_files(storage.join(str(out), STATE_DIR, f"dt={date}"), recursive=False):
        if marker.endswith(".json"):
            storage.delete(marker)
