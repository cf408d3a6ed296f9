"""``edge-asc service install|status|uninstall``: run ``edge-asc listen`` as a systemd service.

``install --model M --device NAME [--mqtt URL ...] [--http ADDR] [--user]`` writes a ``Type=notify`` unit with a
watchdog, restart on failure and a hardened sandbox (:mod:`edge_asc.runtime.systemd_unit`), then enables and starts
it with ``systemctl`` (``--no-start``: only write it; ``--print``: only show it). System units need root (sudo) and
run as ``--run-as`` (default: the user who ran sudo) in the ``audio`` group; ``--user`` units run in your own
session (``loginctl enable-linger`` starts them at boot). ``status`` shows systemd's view and the last detection in
the service's database; ``uninstall`` stops, disables and removes the unit (the data folder is kept).
"""

from __future__ import annotations

import argparse

DEFAULT_NAME = "edge-asc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--user", action="store_true", help="a systemctl --user unit instead of a system unit")
    common.add_argument("--name", default=DEFAULT_NAME, help=f"unit name without .service (default {DEFAULT_NAME})")
    common.add_argument("--unit-dir", metavar="DIR", help="where unit files live (default /etc/systemd/system, or "
                        "~/.config/systemd/user with --user)")

    i = sub.add_parser("install", parents=[common], help="write, enable and start the unit",
                       description="write, enable and start a systemd unit that runs 'edge-asc listen --wait'")
    i.add_argument("--model", required=True, metavar="M", help=".tflite model exported by 'edge-asc export'")
    i.add_argument("--device", required=True, metavar="NAME|INDEX",
                   help="input device (part of its name is best: indexes change when devices come and go)")
    i.add_argument("--data-dir", metavar="DIR", help="the one writable folder: events.jsonl and detections.db "
                   "(default /var/lib/NAME, or ~/.local/share/NAME with --user)")
    i.add_argument("--run-as", metavar="USER", help="account of a system unit (default: $SUDO_USER, else you)")
    i.add_argument("--mqtt", metavar="URL", help="publish to this broker (mqtt://host:1883, mqtts://host:8883)")
    i.add_argument("--mqtt-ca", metavar="FILE", help="with mqtts://: the CA that signed the broker's certificate")
    i.add_argument("--mqtt-credentials", metavar="FILE", help="file with user:password (chmod 600); a system unit "
                   "loads it with LoadCredential=, so it may stay readable by root only")
    i.add_argument("--mqtt-node", metavar="NAME", help="MQTT topic segment / Home Assistant node (default host name)")
    i.add_argument("--http", metavar="HOST:PORT", help="serve the status page (e.g. 127.0.0.1:8080)")
    i.add_argument("--hop", type=float, metavar="S", help="seconds between window starts")
    i.add_argument("--watchdog", type=int, default=30, metavar="S", help="WatchdogSec (default 30)")
    i.add_argument("--no-start", action="store_true", help="write the unit only (no systemctl calls)")
    i.add_argument("--print", dest="print_only", action="store_true", help="print the unit and write nothing")

    s = sub.add_parser("status", parents=[common], help="systemd's view and the last detection",
                       description="show the service's state (systemctl) and the last detection in its database")
    s.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("uninstall", parents=[common], help="stop, disable and remove the unit (data is kept)",
                   description="stop, disable and remove the unit; the data folder is kept")


def _unit_dir(args) -> str:
    import os

    if args.unit_dir:
        return os.path.abspath(args.unit_dir)
    if args.user:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return os.path.join(base, "systemd", "user")
    return "/etc/systemd/system"


def _systemctl(args, *cmd: str, check: bool = True):
    """Run ``systemctl [--user] cmd...``; returns the CompletedProcess. Raises DeviceError naming the command."""
    import shutil
    import subprocess

    from ..errors import EdgeAscError

    exe = shutil.which("systemctl")
    if exe is None:
        raise EdgeAscError("systemctl not found: this system does not run systemd (use --no-start to only write "
                           "the unit)")
    full = [exe, *(["--user"] if args.user else []), *cmd]
    r = subprocess.run(full, check=False, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise EdgeAscError(f"'systemctl {' '.join(full[1:])}' failed: {msg[0] if msg else f'exit {r.returncode}'}")
    return r


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.action is None:
        raise UsageError("give an action: install, status or uninstall")
    return {"install": _install, "status": _status, "uninstall": _uninstall}[args.action](args)


def _install(args) -> int:
    import getpass
    import os
    import sys

    from .._io import atomic_write_text
    from ..errors import ConfigError, UsageError
    from ..runtime.mqtt import parse_url
    from ..runtime.systemd_unit import UnitSpec, render_unit
    from ..tflite_meta import read_model_card

    model = os.path.abspath(args.model)
    read_model_card(model)  # a missing file or a model without a card fails here, not at every boot
    is_root = os.geteuid() == 0
    if not args.user and not is_root and not args.print_only and not args.unit_dir:
        raise UsageError("a system unit needs root: run it with sudo, or install a --user unit")
    if args.watchdog < 5:
        raise UsageError(f"--watchdog must be >= 5 s, got {args.watchdog}")
    home_user = os.environ.get("SUDO_USER") or getpass.getuser()
    run_as = args.run_as or home_user
    if args.user and args.run_as:
        raise UsageError("--run-as is for system units; a --user unit runs as you")
    if args.data_dir:
        data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
        state_directory = ""
    elif args.user:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        data_dir, state_directory = os.path.join(base, args.name), ""
    else:
        data_dir, state_directory = f"/var/lib/{args.name}", args.name
    listen = ["--model", model, "--device", str(args.device), "--wait", "--plain",
              "--jsonl", os.path.join(data_dir, "events.jsonl"), "--db", os.path.join(data_dir, "detections.db")]
    if args.hop is not None:
        if not args.hop > 0:
            raise UsageError(f"--hop must be > 0 seconds, got {args.hop}")
        listen += ["--hop", repr(args.hop)]
    credentials = ""
    if args.mqtt:
        tls, _, _ = parse_url(args.mqtt)
        listen += ["--mqtt", args.mqtt]
        if args.mqtt_ca:
            if not tls:
                raise UsageError("--mqtt-ca needs an mqtts:// broker URL")
            listen += ["--mqtt-ca", os.path.abspath(args.mqtt_ca)]
        if args.mqtt_node:
            listen += ["--mqtt-node", args.mqtt_node]
        if args.mqtt_credentials:
            credentials = os.path.abspath(args.mqtt_credentials)
            if not os.path.isfile(credentials):
                raise ConfigError(f"--mqtt-credentials {credentials}: no such file")
    elif args.mqtt_ca or args.mqtt_credentials or args.mqtt_node:
        raise UsageError("--mqtt-ca, --mqtt-credentials and --mqtt-node need --mqtt URL")
    if args.http:
        from ..runtime.status_http import parse_address

        parse_address(args.http)  # a bad address fails now, not at every start
        listen += ["--http", args.http]
    spec = UnitSpec(name=args.name, python=os.path.abspath(sys.executable), listen_args=listen,
                    user_mode=args.user, run_as="" if args.user else run_as, data_dir=data_dir,
                    state_directory=state_directory, watchdog_s=args.watchdog, credentials_file=credentials,
                    network=bool(args.mqtt))
    text = render_unit(spec, header=f"Written by 'edge-asc service install'. Remove with 'edge-asc service "
                                    f"uninstall{' --user' if args.user else ''}'.")
    if args.print_only:
        print(text, end="")
        return 0
    unit_dir = _unit_dir(args)
    path = os.path.join(unit_dir, spec.unit_name)
    os.makedirs(unit_dir, exist_ok=True)
    if not state_directory:
        os.makedirs(data_dir, exist_ok=True)
        if is_root and not args.user and run_as != "root":
            import shutil

            shutil.chown(data_dir, user=run_as)
    atomic_write_text(path, text)
    os.chmod(path, 0o644)
    print(f"edge-asc: wrote {path}")
    ctl = f"systemctl{' --user' if args.user else ''}"
    if args.no_start:
        print(f"edge-asc: start it with: {ctl} daemon-reload && {ctl} enable --now {spec.unit_name}")
        return 0
    _systemctl(args, "daemon-reload")
    _systemctl(args, "enable", "--now", spec.unit_name)
    print(f"edge-asc: {spec.unit_name} enabled and started; follow it with "
          f"journalctl{' --user' if args.user else ''} -u {args.name} -f, or 'edge-asc service status"
          f"{' --user' if args.user else ''}'")
    if args.user:
        print(f"edge-asc: to start it at boot without logging in: sudo loginctl enable-linger {home_user}")
    return 0


def _unit_path(args) -> str:
    import os

    return os.path.join(_unit_dir(args), f"{args.name}.service")


def last_detection(db_path: str) -> dict | None:
    """The newest row of a listen database (read-only) plus the number of rows in the last hour, or None."""
    import sqlite3
    import time
    from pathlib import Path

    if not Path(db_path).is_file():
        return None
    try:
        con = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            row = con.execute("SELECT timestamp, label, confidence FROM detections ORDER BY id DESC LIMIT 1"
                              ).fetchone()
            hour = con.execute("SELECT count(*) FROM detections WHERE timestamp >= ?", (time.time() - 3600,)
                               ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    if row is None:
        return {"rows_last_hour": 0}
    return {"timestamp": row[0], "label": row[1], "confidence": round(row[2], 4), "rows_last_hour": hour}


def _status(args) -> int:
    import json
    import os
    import time

    from ..runtime.systemd_unit import listen_args_from_unit

    path = _unit_path(args)
    out: dict = {"unit": f"{args.name}.service", "unit_file": path, "installed": os.path.isfile(path)}
    if out["installed"]:
        with open(path, encoding="utf-8") as f:
            largs = listen_args_from_unit(f.read())
        db = largs[largs.index("--db") + 1] if "--db" in largs else None
        out["database"] = db
        out["last_detection"] = last_detection(db) if db else None
    props = ["ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "ActiveEnterTimestamp",
             "UnitFileState"]
    r = _systemctl(args, "show", f"{args.name}.service", "--property=" + ",".join(props), check=False)
    for line in r.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in props:
            out[key] = value
    active = out.get("ActiveState") == "active"
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0 if active else 1
    print(f"{out['unit']}: {out.get('ActiveState', 'unknown')} ({out.get('SubState', '-')}), "
          f"{out.get('UnitFileState', '-')}, restarts {out.get('NRestarts', '-')}, pid {out.get('MainPID', '-')}")
    if out.get("StatusText"):
        print(f"  status: {out['StatusText']}")
    print(f"  unit file: {path}{'' if out['installed'] else ' (not installed)'}")
    det = out.get("last_detection")
    if det and "label" in det:
        age = time.time() - det["timestamp"]
        print(f"  last detection: {det['label']} ({det['confidence']:.2f}) {age:.0f} s ago; "
              f"{det['rows_last_hour']} windows in the last hour ({out['database']})")
    elif out.get("database"):
        print(f"  last detection: none yet ({out['database']})")
    return 0 if active else 1


def _uninstall(args) -> int:
    import os

    path = _unit_path(args)
    unit = f"{args.name}.service"
    if not os.path.isfile(path):
        print(f"edge-asc: {path} does not exist: nothing to uninstall")
        return 0
    r = _systemctl(args, "disable", "--now", unit, check=False)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        print(f"edge-asc: warning: systemctl disable --now {unit}: {msg[0] if msg else r.returncode}")
    os.remove(path)
    _systemctl(args, "daemon-reload", check=False)
    print(f"edge-asc: removed {path} (the data folder is kept)")
    return 0
