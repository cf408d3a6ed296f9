"""systemd's notify protocol (``sd_notify``) with the standard library, for ``Type=notify`` services.

``READY=1`` when listen is up, ``WATCHDOG=1`` heartbeats from the listen loop (at half of ``WatchdogSec``, as
systemd recommends: a stalled loop stops them and systemd restarts the service), ``STATUS=...`` lines that
``systemctl status`` shows, and ``STOPPING=1``. Messages are datagrams to the unix socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from .sinks import Sink
from .tracker import SceneChange


class SystemdNotifier(Sink):
    """Talks to systemd when run as a ``Type=notify`` service; a no-op sink otherwise.

    Args:
        env: the environment to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from
            (default ``os.environ``).

    Attributes:
        watchdog_s: systemd's watchdog timeout in seconds (None when the watchdog is off for this process).
        sent: datagrams sent so far.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr is not None and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.address = addr
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        try:
            if usec and int(usec) > 0 and (not pid or int(pid) == os.getpid()):
                self.watchdog_s = int(usec) / 1e6
        except ValueError:
            self.watchdog_s = None
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._last_ping = -1e9
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=value`` lines as one datagram. Returns False when not under systemd or the send failed (a
        missing socket must never stop listening: the failure is counted in ``errors``)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode("utf-8"), self.address)
        except OSError:
            self.errors += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self, *, force: bool = False) -> bool:
        """``WATCHDOG=1`` if half the watchdog timeout has passed since the last one (or ``force``)."""
        if self.watchdog_s is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    # ---- sink side: the listen loop ----------------------------------------------------------------------------
    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        if kind == "start":
            self.ready(f"listening to {fields.get('source', 'input')} '{fields.get('name', '')}'")
        elif kind == "stop":
            self.notify("STOPPING=1", f"STATUS=stopped ({fields.get('stopped_by', '')})")
        elif kind == "waiting":  # up and healthy, waiting for the microphone: do not let the start time out
            self.ready(message.removeprefix("edge-asc: "))
        elif kind in ("device_lost", "device_resumed") and message:
            self.status(message.removeprefix("edge-asc: "))

    def change(self, change: SceneChange) -> None:
        self.status(f"scene {change.label} ({change.confidence:.2f}) since {change.start_s:.1f} s")

    def tick(self) -> None:
        self.watchdog()

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
