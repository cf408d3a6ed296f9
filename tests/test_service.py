"""`edge-asc service` and what a service needs from `listen`: the systemd unit (content, `systemd-analyze verify`),
install / status / uninstall through a recording fake `systemctl`, sd_notify READY / WATCHDOG / STATUS / STOPPING on a
fake NOTIFY_SOCKET (also while a lost device is retried), and `listen --wait` for a microphone that appears later."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import fake_sounddevice
import numpy as np
import pytest
from apt_tools import require_binary
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.errors import ConfigError
from edge_asc.runtime.notify import SystemdNotifier
from edge_asc.runtime.systemd_unit import UnitSpec, listen_args_from_unit, quote_arg, render_unit

require("tensorflow")  # builds the tiny test model
from runtime_models import high, low, write_model

NATIVE = 44_100


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("service") / "tiny.tflite")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    p = tmp_path_factory.mktemp("service_wav") / "clip.wav"
    write_audio(p, np.concatenate([low(2.0, 16_000), high(2.0, 16_000)]), 16_000)
    return str(p)


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket; records every datagram with its time."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edge-asc-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="notify", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in list(self.messages) for line in m.split("\n")]

    def close(self) -> None:
        self._halt.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(monkeypatch):
    ns = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", ns.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: pings every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield ns
    ns.close()


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---- the unit -------------------------------------------------------------------------------------------------
def _spec(**kw):
    base = {"python": sys.executable, "listen_args": ["--model", "/m.tflite", "--device", "USB", "--wait"],
            "run_as": "pi", "data_dir": "/var/lib/edge-asc", "state_directory": "edge-asc"}
    return UnitSpec(**{**base, **kw})


def test_system_unit_content():
    text = render_unit(_spec(credentials_file="/etc/edge-asc/mqtt.cred", network=True))
    lines = text.splitlines()
    for want in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "WatchdogSec=30", "User=pi",
                 "SupplementaryGroups=audio", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only",
                 "ReadWritePaths=/var/lib/edge-asc", "StateDirectory=edge-asc", "PrivateTmp=yes",
                 "LoadCredential=mqtt:/etc/edge-asc/mqtt.cred", "WantedBy=multi-user.target",
                 "Wants=network-online.target", "After=sound.target network-online.target"):
        assert want in lines, want
    exec_line = next(x for x in lines if x.startswith("ExecStart="))
    assert exec_line == (f"ExecStart={sys.executable} -m edge_asc listen --model /m.tflite --device USB --wait "
                         "--mqtt-credentials %d/mqtt")
    assert "PrivateDevices" not in "".join(x for x in lines if not x.startswith("#"))  # /dev/snd must stay


def test_user_unit_content():
    text = render_unit(_spec(user_mode=True, run_as="", data_dir="/home/pi/.local/share/edge-asc",
                             state_directory="", credentials_file="/home/pi/.config/edge-asc/mqtt.cred"))
    lines = text.splitlines()
    assert "WantedBy=default.target" in lines and "NoNewPrivileges=yes" in lines and "Type=notify" in lines
    assert not [x for x in lines if x.startswith(("User=", "SupplementaryGroups=", "LoadCredential=",
                                                  "ProtectSystem=", "StateDirectory="))]
    assert lines[[x.startswith("ExecStart=") for x in lines].index(True)].endswith(
        "--mqtt-credentials /home/pi/.config/edge-asc/mqtt.cred")


def test_exec_start_quoting_round_trips():
    odd = "/srv/my models/50% $HOME \"q\".tflite"
    assert quote_arg("plain") == "plain" and quote_arg("a b") == '"a b"' and quote_arg("5%") == "5%%"
    text = render_unit(_spec(listen_args=["--model", odd, "--device", "USB PnP"]))
    assert listen_args_from_unit(text) == ["--model", odd, "--device", "USB PnP"]


@pytest.mark.parametrize("kw, match", [
    ({"name": "a/b"}, "service name"), ({"python": "python3"}, "absolute"), ({"data_dir": "rel"}, "absolute"),
    ({"run_as": ""}, "run_as"), ({"watchdog_s": 1}, "WatchdogSec"), ({"listen_args": ["a\nb"]}, "line break"),
])
def test_unit_spec_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        _spec(**kw)


def _verify(unit_path: Path, *, user: bool = False) -> None:
    exe = require_binary("systemd", "systemd-analyze")  # skips without it, fails under CI (tests/apt_tools.py)
    env = dict(os.environ)
    if user:
        rt = tempfile.mkdtemp(prefix="xdg", dir="/tmp")
        env["XDG_RUNTIME_DIR"] = rt
    r = subprocess.run([exe, *(["--user"] if user else []), "verify", str(unit_path)], check=False,
                       capture_output=True, text=True, env=env, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    bad = [x for x in out.splitlines() if any(w in x for w in ("Unknown", "Invalid", "Failed", "not executable",
                                                               "Ignoring", "ignoring"))]
    assert bad == [], out


def test_install_writes_a_unit_that_systemd_accepts(model_path, tmp_path, capsys):
    cred = tmp_path / "mqtt.cred"
    cred.write_text("edge:s3cr3t-pw\n")
    os.chmod(cred, 0o600)
    units, data = tmp_path / "units", tmp_path / "data"
    me = subprocess.run(["id", "-un"], check=True, capture_output=True, text=True).stdout.strip()
    assert main(["service", "install", "--model", model_path, "--device", "USB PnP", "--unit-dir", str(units),
                 "--data-dir", str(data), "--run-as", me, "--mqtt", "mqtt://broker.lan", "--mqtt-credentials",
                 str(cred), "--http", "127.0.0.1:8080", "--no-start"]) == 0
    out = capsys.readouterr().out
    unit = units / "edge-asc.service"
    assert f"wrote {unit}" in out and "systemctl daemon-reload && systemctl enable --now edge-asc.service" in out
    text = unit.read_text()
    assert "s3cr3t" not in text and data.is_dir()  # the unit names the file, never the password
    largs = listen_args_from_unit(text)
    assert largs[:6] == ["--model", model_path, "--device", "USB PnP", "--wait", "--plain"]
    assert largs[largs.index("--db") + 1] == str(data / "detections.db")
    assert f"ReadWritePaths={data}" in text.splitlines() and f"User={me}" in text.splitlines()
    _verify(unit)


def test_user_install_and_print(model_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert main(["service", "install", "--user", "--model", model_path, "--device", "USB", "--no-start"]) == 0
    unit = tmp_path / "config" / "systemd" / "user" / "edge-asc.service"
    assert unit.is_file() and (tmp_path / "share" / "edge-asc").is_dir()
    _verify(unit, user=True)
    capsys.readouterr()
    assert main(["service", "install", "--model", model_path, "--device", "USB", "--print", "--run-as", "pi"]) == 0
    assert capsys.readouterr().out.startswith("# Written by 'edge-asc service install'")


def test_install_errors(model_path, tmp_path, monkeypatch, capsys):
    base = ["service", "install", "--device", "USB", "--unit-dir", str(tmp_path), "--no-start"]
    assert main([*base, "--model", str(tmp_path / "missing.tflite")]) == 1
    assert main([*base, "--model", model_path, "--mqtt", "mqtt://h", "--mqtt-ca", model_path]) == 2
    assert main([*base, "--model", model_path, "--mqtt", "mqtt://u:p@h"]) == 2
    assert main([*base, "--model", model_path, "--mqtt-node", "x"]) == 2
    assert main([*base, "--model", model_path, "--watchdog", "1"]) == 2
    assert main([*base, "--model", model_path, "--http", "localhost"]) == 2
    assert main(["service"]) == 2
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["service", "install", "--model", model_path, "--device", "USB"]) == 2
    assert "needs root: run it with sudo, or install a --user unit" in capsys.readouterr().err


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    """`systemctl` on PATH that logs its arguments and answers `show` like systemd does."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bindir / "systemctl"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *show*) printf 'ActiveState=active\\nSubState=running\\nMainPID=4242\\nNRestarts=1\\n'
          printf 'StatusText=scene low (0.91) since 12.0 s\\nUnitFileState=enabled\\n' ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_install_status_uninstall_with_systemctl(model_path, tmp_path, fake_systemctl, capsys):
    from edge_asc.runtime.sinks import SCHEMA

    units, data = tmp_path / "units", tmp_path / "data"
    assert main(["service", "install", "--model", model_path, "--device", "USB", "--unit-dir", str(units),
                 "--data-dir", str(data), "--run-as", "root"]) == 0
    assert fake_systemctl.read_text().splitlines() == ["daemon-reload", "enable --now edge-asc.service"]
    db = sqlite3.connect(data / "detections.db")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO detections (timestamp, stream_time_s, label, confidence, top3, latency_ms, model_sha256)"
               " VALUES (?, 1.0, 'low', 0.91, '[]', 1.0, 'x')", (time.time() - 5,))
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["service", "status", "--unit-dir", str(units)]) == 0
    out = capsys.readouterr().out
    assert "edge-asc.service: active (running), enabled, restarts 1, pid 4242" in out
    assert "status: scene low (0.91)" in out and "last detection: low (0.91)" in out and "1 windows in the last" in out
    assert main(["service", "status", "--unit-dir", str(units), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["installed"] and st["last_detection"]["label"] == "low" and st["MainPID"] == "4242"
    assert main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert not (units / "edge-asc.service").exists() and (data / "detections.db").exists()
    assert fake_systemctl.read_text().splitlines()[-2:] == ["disable --now edge-asc.service", "daemon-reload"]
    assert main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert "nothing to uninstall" in capsys.readouterr().out


def test_status_user_unit_not_running(tmp_path, monkeypatch, capsys):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args") +
                                      "\nprintf 'ActiveState=inactive\\nSubState=dead\\n'\n")
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert main(["service", "status", "--user", "--unit-dir", str(tmp_path)]) == 1
    assert "inactive (dead)" in capsys.readouterr().out
    assert (tmp_path / "args").read_text().startswith("--user show edge-asc.service")


# ---- sd_notify --------------------------------------------------------------------------------------------------
def test_notifier_without_systemd_is_a_no_op():
    n = SystemdNotifier(env={})
    assert not n.enabled and not n.ready() and not n.watchdog(force=True)
    n.tick()
    n.close()
    n = SystemdNotifier(env={"NOTIFY_SOCKET": "/nonexistent/socket", "WATCHDOG_USEC": "1000000"})
    assert n.enabled and not n.ready() and n.errors == 1  # a vanished socket never raises into listen
    other_pid = SystemdNotifier(env={"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_s is None  # the watchdog is meant for another process


def test_notifier_abstract_socket_and_rate_limit():
    ns = NotifySocket(abstract=True)
    try:
        n = SystemdNotifier(env={"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "2000000"})
        assert n.watchdog_s == 2.0 and n.ready("hello")
        assert n.watchdog() and not n.watchdog()  # at most one ping per watchdog_s / 2
        n.close()
        time.sleep(0.3)
        assert ns.lines() == ["READY=1", "STATUS=hello", "WATCHDOG=1"]
    finally:
        ns.close()


def test_listen_sends_ready_watchdog_status_and_stopping(notify_socket, model_path, clip, capsys):
    assert main(["listen", "--model", model_path, "--input", clip, "--realtime", "--duration", "2.5", "--plain",
                 "--hop", "0.25", "--smooth", "2"]) == 0
    time.sleep(0.3)
    lines = notify_socket.lines()
    assert lines[0] == "READY=1" and lines[1].startswith("STATUS=listening to file 'clip.wav'")
    assert any(x.startswith("STATUS=scene low (") for x in lines)
    assert lines[-2:] == ["STOPPING=1", "STATUS=stopped (duration)"]
    pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 10  # 2.5 s at one ping per 0.1 s, from the listen loop
    assert max(np.diff(pings)) < 0.35


def test_watchdog_keeps_pinging_while_a_lost_device_is_retried(notify_socket, monkeypatch, model_path, tmp_path):
    from edge_asc.runtime import Classifier, StreamPipeline
    from edge_asc.runtime.engine import run_listen
    from edge_asc.runtime.sources import MicSource

    world = fake_sounddevice.World(low(6.0, NATIVE), NATIVE, fail_at_s=0.5, reopen_failures=2)
    sd = fake_sounddevice.make_module(world)
    notifier = SystemdNotifier()
    src = MicSource("usb", sd=sd, stall_seconds=0.5)
    pipe = StreamPipeline(Classifier(model_path), input_rate=NATIVE)
    summary = run_listen(pipe, src, [notifier], duration_s=3.0, backoff_s=(1.0, 2.0))
    assert summary.device_losses == 1 and world.open_failures == 2
    msgs = list(notify_socket.messages)
    lost = next(t for t, m in msgs if m.startswith("STATUS=input device") and "retrying" in m)
    back = next(t for t, m in msgs if "is back after" in m)
    assert back - lost > 2.5  # 1 s + 2 s of back-off with two failed re-opens
    pings = [t for t, m in msgs if m == "WATCHDOG=1" and lost < t < back]
    assert len(pings) >= 2 and max(np.diff([lost, *pings, back])) < 1.5


# ---- listen --wait ----------------------------------------------------------------------------------------------
def _world_without_usb():
    world = fake_sounddevice.World(np.concatenate([low(3.0, NATIVE), high(3.0, NATIVE)]), NATIVE)
    usb = world.devices.pop(1)
    return world, usb


def test_wait_for_a_microphone_that_appears_later(monkeypatch, notify_socket, model_path, tmp_path, capsys):
    world, usb = _world_without_usb()
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice.make_module(world))
    plugged = []

    def plug_in():
        time.sleep(1.2)
        world.devices.insert(1, usb)
        plugged.append(time.monotonic())

    threading.Thread(target=plug_in, daemon=True).start()
    j = tmp_path / "e.jsonl"
    t0 = time.monotonic()
    assert main(["listen", "--model", model_path, "--device", "USB PnP", "--wait", "--duration", "1.0", "--plain",
                 "--jsonl", str(j)]) == 0
    assert plugged and time.monotonic() - t0 > 2.0
    err = capsys.readouterr().err
    assert "waiting for the input device (no input device matches 'USB PnP'" in err
    assert "[1] USB PnP Sound Device: Audio (hw:1,0) (1 ch, 44100 Hz) appeared after" in err
    types = [r["type"] for r in jsonl(j)]
    assert types[:3] == ["waiting", "waiting", "start"] and types[-1] == "stop"
    lines = notify_socket.lines()
    assert lines[0] == "READY=1" and lines[1].startswith("STATUS=waiting for the input device")
    pings = [t for t, m in notify_socket.messages if m == "WATCHDOG=1" and t < plugged[0]]
    assert len(pings) >= 2  # heartbeats while waiting: the watchdog does not kill a service waiting for its mic


def test_without_wait_a_missing_microphone_is_an_error(monkeypatch, model_path, capsys):
    world, _ = _world_without_usb()
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice.make_module(world))
    assert main(["listen", "--model", model_path, "--device", "USB PnP", "--plain"]) == 1
    assert "no input device matches 'USB PnP'" in capsys.readouterr().err


def test_sigterm_while_waiting_stops_cleanly(monkeypatch, model_path, tmp_path, capsys):
    world, _ = _world_without_usb()
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice.make_module(world))
    threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGTERM)).start()
    j = tmp_path / "e.jsonl"
    assert main(["listen", "--model", model_path, "--device", "USB PnP", "--wait", "--plain", "--jsonl",
                 str(j)]) == 0
    assert "stopped (signal) while waiting for the input device" in capsys.readouterr().err
    assert [r["type"] for r in jsonl(j)] == ["waiting", "stop"]


def test_wait_needs_a_microphone(model_path, clip):
    assert main(["listen", "--model", model_path, "--input", clip, "--wait"]) == 2
