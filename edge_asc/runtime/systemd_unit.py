"""A systemd unit for ``edge-asc listen`` as a long-running service (``edge-asc service install`` writes it).

``Type=notify`` with ``WatchdogSec``: listen sends ``READY=1`` and watchdog heartbeats from its loop
(:mod:`edge_asc.runtime.notify`), so a stalled analysis is killed and restarted (``Restart=on-failure``). The
microphone is waited for (``listen --wait``), since a USB microphone may appear after the service starts at boot.
System units run as an ordinary user in the ``audio`` group with a read-only view of the system
(``ProtectSystem=strict``, ``ProtectHome=read-only``, ``NoNewPrivileges``) and write only their data folder
(``ReadWritePaths``). MQTT credentials reach a system unit through ``LoadCredential=`` (the file can stay root-only);
they never appear in the unit or on the command line. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
#: the name of the credential the MQTT credentials file becomes inside a system unit.
MQTT_CREDENTIAL = "mqtt"


def quote_arg(arg: str) -> str:
    """One ExecStart= argument: systemd specifiers (``%``) and variables (``$``) escaped, quoted when it holds
    white space, quotes or backslashes (systemd's command-line syntax, close to the shell's double quotes)."""
    s = arg.replace("%", "%%").replace("$", "$$")
    if s and not re.search(r"[\s\"'\\;]", s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, kw_only=True)
class UnitSpec:
    """What the unit runs and how.

    ``listen_args`` are the arguments after ``edge-asc listen`` (paths absolute); ``python`` the interpreter that
    runs ``-m edge_asc``; ``user_mode`` a ``systemctl --user`` unit (no ``User=``, no groups, the sandboxing that
    needs no privileges); ``run_as`` the account of a system unit; ``data_dir`` the only writable folder;
    ``watchdog_s`` WatchdogSec in seconds; ``credentials_file`` the MQTT ``user:password`` file a system unit loads
    with ``LoadCredential=`` (listen then reads ``%d/mqtt``); ``network`` orders the unit after the network
    (MQTT needs it).
    """

    name: str = "edge-asc"
    python: str
    listen_args: Sequence[str]
    user_mode: bool = False
    run_as: str = ""
    data_dir: str
    state_directory: str = ""
    """a ``StateDirectory=`` name (system units: systemd creates /var/lib/<name> owned by ``run_as``)."""
    watchdog_s: int = 30
    restart_s: int = 5
    credentials_file: str = ""
    network: bool = False
    description: str = "edge-asc acoustic scene classifier (listen)"
    environment: Sequence[str] = field(default_factory=lambda: ("PYTHONUNBUFFERED=1",))

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"service name {self.name!r} must be 1-64 characters of [A-Za-z0-9_.@-]")
        if not os.path.isabs(self.python):
            raise ConfigError(f"the service's Python must be an absolute path, got {self.python!r}")
        if not os.path.isabs(self.data_dir):
            raise ConfigError(f"the data folder must be an absolute path, got {self.data_dir!r}")
        if not self.user_mode and not self.run_as:
            raise ConfigError("a system unit needs the account to run as (run_as)")
        if not 5 <= self.watchdog_s <= 3600:
            raise ConfigError(f"WatchdogSec must be 5..3600 s, got {self.watchdog_s}")
        if self.credentials_file and not os.path.isabs(self.credentials_file):
            raise ConfigError(f"the MQTT credentials file must be an absolute path, got {self.credentials_file!r}")
        for line in (*self.listen_args, *self.environment, self.description):
            if "\n" in line or "\r" in line:
                raise ConfigError(f"a line break in a unit value: {line!r}")

    @property
    def unit_name(self) -> str:
        return f"{self.name}.service"


def exec_start(spec: UnitSpec) -> str:
    """The ExecStart= command line."""
    args = [spec.python, "-m", "edge_asc", "listen", *spec.listen_args]
    line = " ".join(quote_arg(a) for a in args)
    if spec.credentials_file and not spec.user_mode:
        line += f" --mqtt-credentials %d/{MQTT_CREDENTIAL}"  # %d: $CREDENTIALS_DIRECTORY, set up by systemd
    elif spec.credentials_file:
        line += " --mqtt-credentials " + quote_arg(spec.credentials_file)
    return line


def render_unit(spec: UnitSpec, *, header: str = "") -> str:
    """The unit file's text."""
    after = ["sound.target"] + (["network-online.target"] if spec.network else [])
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines += [
        "[Unit]",
        f"Description={spec.description}",
        f"After={' '.join(after)}",
    ]
    if spec.network:
        lines.append("Wants=network-online.target")
    lines += [
        "# Give up after 10 failed starts within 5 minutes (a wrong model path should not loop forever).",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start(spec)}",
        "Restart=on-failure",
        f"RestartSec={spec.restart_s}",
        "# listen sends WATCHDOG=1 from its loop every WatchdogSec/2: a stalled analysis is killed and restarted.",
        f"WatchdogSec={spec.watchdog_s}",
        "TimeoutStartSec=120",
        "TimeoutStopSec=30",
    ]
    lines += [f"Environment={quote_arg(e)}" for e in spec.environment]
    if not spec.user_mode:
        lines += [f"User={spec.run_as}", "SupplementaryGroups=audio"]
        if spec.state_directory:
            lines.append(f"StateDirectory={spec.state_directory}")
        if spec.credentials_file:
            lines.append(f"LoadCredential={MQTT_CREDENTIAL}:{spec.credentials_file}")
    lines += [
        f"WorkingDirectory={spec.data_dir}",
        "# Hardening: nothing to gain, read-only system, one writable folder (the log and database).",
        "NoNewPrivileges=yes",
    ]
    if not spec.user_mode:  # these need privileges to set up the mount namespace: system units only
        lines += [
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            f"ReadWritePaths={spec.data_dir}",
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectHostname=yes",
            "RestrictSUIDSGID=yes",
            "RestrictNamespaces=yes",
            "LockPersonality=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
            "# Not PrivateDevices= nor ProtectClock= (it implies a DeviceAllow= list): the microphone is /dev/snd.",
        ]
    else:
        lines += [
            "# ProtectSystem=, ReadWritePaths= and friends need a mount namespace, which user units get only with",
            "# PrivateUsers=, and that hides the audio group's devices: the user unit keeps NoNewPrivileges only.",
            f"# Writes go to {spec.data_dir}.",
        ]
    lines += [
        "",
        "[Install]",
        f"WantedBy={'default.target' if spec.user_mode else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def listen_args_from_unit(text: str) -> list[str]:
    """The ``listen`` arguments of a unit written by :func:`render_unit` (for ``service status``)."""
    import shlex

    for line in text.splitlines():
        if line.startswith("ExecStart="):
            args = shlex.split(line[len("ExecStart="):].replace("%%", "%").replace("$$", "$"))
            return args[args.index("listen") + 1:] if "listen" in args else []
    return []
