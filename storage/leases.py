"""Who holds a job's lease, precisely enough to tell when the holder is gone.

A lease owner is written as `host/pid/started/token`: the machine (hostname plus boot
id, so a reboot is a new host), the process id, the process's start time (so a reused
pid is not mistaken for the holder) and a random token per runner (two runners in one
process are two holders). On the same host a holder whose process is gone is known to
be dead at once; a holder on another host is only known dead when its lease runs out.
"""
from __future__ import annotations

import functools
import os
import secrets
import socket
import time
from dataclasses import dataclass
from enum import StrEnum

import psutil


class HolderState(StrEnum):
    ALIVE = "alive"  # its process runs (same host) or its lease is current (other host)
    GONE = "gone"  # same host, the process is dead: take over at once
    EXPIRED = "expired"  # the lease ran out


@functools.cache
def this_host() -> str:
    boot = ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()[:8]
    except OSError:
        pass
    name = socket.gethostname().replace("/", "_")
    return f"{name}~{boot}" if boot else name


def _start_time(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    token: str

    @classmethod
    def current(cls) -> Holder:
        pid = os.getpid()
        return cls(this_host(), pid, _start_time(pid) or 0.0, secrets.token_hex(4))

    @classmethod
    def parse(cls, owner: str) -> Holder | None:
        parts = owner.rsplit("/", 3)
        if len(parts) != 4:
            return None  # written by an older videobot: only its expiry can tell
        host, pid, started, token = parts
        try:
            return cls(host, int(pid), float(started), token)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started:.2f}/{self.token}"

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host.split('~')[0]}"

    def process_gone(self) -> bool:
        """True only when this holder is on our host and its process is not running any more."""
        if self.host != this_host():
            return False
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True  # killed, not yet reaped by its parent: it will never write again
            started = round(proc.create_time(), 2)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return True
        except psutil.AccessDenied:
            return False
        return abs(started - self.started) > 0.05  # the pid was reused by another process


def holder_state(owner: str | None, until: float | None, *, now: float | None = None) -> HolderState | None:
    """None when nobody holds the lease."""
    if owner is None:
        return None
    now = time.time() if now is None else now
    holder = Holder.parse(owner)
    if holder is not None and holder.process_gone():
        return HolderState.GONE
    if until is not None and until < now:
        return HolderState.EXPIRED
    return HolderState.ALIVE
