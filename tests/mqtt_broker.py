"""Test helper (not collected): a real Mosquitto broker on a free localhost port, with a password file and, on
request, TLS from a self-signed CA made here with ``openssl``; plus a recording paho subscriber.

Mosquitto is the Debian package ``mosquitto``: when it is missing and we are root with apt, :func:`ensure_mosquitto`
installs it (see :func:`apt_tools.require_binary`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from apt_tools import require_binary

USER, PASSWORD = "edge", "s3cret:with-colon"


def ensure_mosquitto() -> tuple[str, str]:
    """``(mosquitto, mosquitto_passwd)`` paths."""
    return require_binary("mosquitto", "mosquitto"), require_binary("mosquitto", "mosquitto_passwd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tls_files(d: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for localhost / 127.0.0.1 signed by it (openssl CLI)."""
    openssl = require_binary("openssl", "openssl")
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = d / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
        "-subj", "/CN=edge-asc test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
        "-extfile", ext)
    return {"ca": ca_crt, "cert": crt, "key": key}


class Broker:
    """``mosquitto -c <conf>`` on 127.0.0.1:<free port>, anonymous access off, one user (USER / PASSWORD)."""

    def __init__(self, workdir: Path, *, tls: bool = False) -> None:
        self.mosquitto, passwd = ensure_mosquitto()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = make_tls_files(self.dir / "tls") if tls else None
        pw = self.dir / "passwd"
        subprocess.run([passwd, "-c", "-b", str(pw), USER, PASSWORD], check=True, capture_output=True, timeout=30)
        os.chmod(pw, 0o600)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {pw}",
                 "persistence false", f"log_dest file {self.dir / 'mosquitto.log'}", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root: the password file and keys live in a private temp folder
        if self.tls:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}",
                      "tls_version tlsv1.2"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([self.mosquitto, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-2000:]} "
                                   f"{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


class Recorder:
    """A paho subscriber on ``#`` that records ``(monotonic time, topic, payload str, retain)``; it re-subscribes
    after reconnecting (the broker may restart)."""

    def __init__(self, broker: Broker, *, topic: str = "#", user: str = USER, password: str = PASSWORD) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[float, str, str, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"recorder-{os.getpid()}-{id(self)}")
        c.username_pw_set(user, password)
        if broker.tls:
            c.tls_set(ca_certs=str(broker.tls["ca"]))
        c.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, rcs, props):
            self._subscribed.set()

        def on_message(client, userdata, msg):
            with self._lock:
                self.messages.append((time.monotonic(), msg.topic, msg.payload.decode(), bool(msg.retain)))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect_async("127.0.0.1", broker.port, keepalive=10)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            c.loop_stop()
            raise RuntimeError("recorder could not subscribe")

    def snapshot(self) -> list[tuple[float, str, str, bool]]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[tuple[float, str, str, bool]]:
        return [m for m in self.snapshot() if m[1] == topic]

    def wait_for(self, pred, timeout: float = 15.0):
        """The first recorded message for which ``pred(message)`` is true, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.snapshot():
                if pred(m):
                    return m
            time.sleep(0.05)
        got = [(m[1], m[2][:80]) for m in self.snapshot()]
        raise AssertionError(f"no matching MQTT message in {timeout} s; got {got}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
