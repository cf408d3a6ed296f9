"""``edge-asc listen --model M [--device NAME|INDEX] ...``: classify live microphone audio (or a paced file).

Stops cleanly on SIGINT/SIGTERM (sinks flushed and closed, exit 0), after ``--duration`` seconds, or at the end of
``--input``. Survives overflow bursts and a device that disappears and comes back; with ``--wait`` it also waits for
a device that is not there yet. Publishes over MQTT with ``--mqtt``, serves a status page with ``--http``, and talks to
systemd (READY, watchdog) when run as a ``Type=notify`` service (see ``edge-asc service``).
"""

from __future__ import annotations

import argparse

from .classify import add_model_arguments, check_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    p.add_argument("--device", default=None, metavar="NAME|INDEX",
                   help="input device: index or part of its name (default: the system's default input)")
    add_model_arguments(p)
    p.add_argument("--jsonl", metavar="FILE", help="append scene changes and runtime events as JSON lines")
    p.add_argument("--db", metavar="FILE", help="SQLite database (WAL): one detections row per window")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds of audio")
    p.add_argument("--input", metavar="FILE", help="read this audio file instead of a microphone")
    p.add_argument("--realtime", action="store_true", help="with --input: pace the file in real time like a mic")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="with --realtime: play X times faster than real time (soak tests; default 1)")
    p.add_argument("--loop", type=int, default=1, metavar="N",
                   help="with --input: play the file N times back to back, 0 = forever (default 1)")
    p.add_argument("--margin", type=float, default=0.1, metavar="P",
                   help="hysteresis: posterior lead a new scene needs over the current one (default 0.1)")
    p.add_argument("--plain", action="store_true", help="plain line output even on a terminal")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve a read-only status page and JSON API (e.g. 127.0.0.1:8080; port 0 = any free port)")
    p.add_argument("--wait", action="store_true",
                   help="if the input device is not there (yet), wait for it instead of exiting (for services)")
    m = p.add_argument_group("MQTT / Home Assistant (credentials: EDGE_ASC_MQTT_USER and EDGE_ASC_MQTT_PASSWORD, "
                             "or --mqtt-credentials)")
    m.add_argument("--mqtt", metavar="URL", help="publish to this broker: mqtt://host:1883 or mqtts://host:8883")
    m.add_argument("--mqtt-ca", metavar="FILE", help="with mqtts://: PEM CA that signed the broker's certificate")
    m.add_argument("--mqtt-credentials", metavar="FILE", help="file whose first line is user:password (chmod 600)")
    m.add_argument("--mqtt-node", metavar="NAME", help="this device's topic segment and Home Assistant node id "
                   "(default: the host name)")
    m.add_argument("--mqtt-prefix", default="edge-asc", metavar="TOPIC",
                   help="topic root: topics are TOPIC/NODE/{availability,state,scene,event} (default edge-asc)")
    m.add_argument("--mqtt-discovery-prefix", default="homeassistant", metavar="TOPIC",
                   help="Home Assistant discovery prefix; '' turns discovery off (default homeassistant)")
    m.add_argument("--mqtt-interval", type=float, default=30.0, metavar="S",
                   help="seconds between periodic state messages (default 30)")


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from .._io import stderr_line
    from ..errors import UsageError

    if args.list_devices:
        from ..runtime.sources import describe_input_devices, import_sounddevice

        sd = import_sounddevice()
        devs = describe_input_devices(sd)
        if not devs:
            print("no audio input devices found: plug in a USB microphone")
            return 0
        for d in devs:
            print(f"[{d['index']}] {d['name']} ({d['channels']} ch, {d['default_samplerate']:g} Hz)")
        return 0
    check_model_arguments(args)
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.realtime and not args.input:
        raise UsageError("--realtime needs --input FILE")
    if args.input and args.device is not None:
        raise UsageError("give either --device or --input, not both")
    if not 0 <= args.margin < 1:
        raise UsageError(f"--margin must be in [0, 1), got {args.margin}")
    mqtt_config = None
    if args.mqtt:
        from ..runtime.mqtt import config_from_args

        if not args.mqtt_interval > 0:
            raise UsageError(f"--mqtt-interval must be > 0 seconds, got {args.mqtt_interval}")
        mqtt_config = config_from_args(args.mqtt, ca_file=args.mqtt_ca, credentials=args.mqtt_credentials,
                                       node=args.mqtt_node, prefix=args.mqtt_prefix,
                                       discovery_prefix=args.mqtt_discovery_prefix,
                                       state_interval_s=args.mqtt_interval)
    elif args.mqtt_ca or args.mqtt_credentials or args.mqtt_node:
        raise UsageError("--mqtt-ca, --mqtt-credentials and --mqtt-node need --mqtt URL")

    if args.speed != 1.0 and not args.realtime:
        raise UsageError("--speed needs --realtime (without it the file is read as fast as possible)")
    if not 0 < args.speed <= 1000:
        raise UsageError(f"--speed must be in (0, 1000], got {args.speed}")
    if args.loop != 1 and not args.input:
        raise UsageError("--loop needs --input FILE")
    if args.loop < 0:
        raise UsageError(f"--loop must be >= 0 (0 = forever), got {args.loop}")
    if args.wait and args.input:
        raise UsageError("--wait waits for a microphone to appear: not with --input")
    http_address = None
    if args.http:
        from ..runtime.status_http import parse_address

        http_address = parse_address(args.http)

    from ..runtime import Classifier, StreamPipeline
    from ..runtime.engine import run_listen
    from ..runtime.notify import SystemdNotifier
    from ..runtime.sinks import JsonlSink, SqliteSink, TerminalView
    from ..runtime.sources import FileSource, MicSource
    from ..runtime.status import LiveStatus, model_summary

    clf = Classifier(args.model, threads=args.threads, edgetpu=args.edgetpu)
    live_parts: dict = {}  # the source and pipeline, once they exist (after --wait)

    def counters() -> dict:
        src, pipe, mq = live_parts.get("source"), live_parts.get("pipeline"), live_parts.get("mqtt")
        out = {"input_overflows": 0, "ring_overruns": 0, "dropped_samples": 0}
        if src is not None and pipe is not None:
            out = {"input_overflows": src.overflows, "ring_overruns": pipe.ring.overrun_events,
                   "dropped_samples": pipe.ring.overrun_samples}
        if mq is not None:
            out.update(mqtt_connected=mq.connected, mqtt_dropped=mq.dropped)
        return out

    def status() -> dict:
        c = counters()
        return {"overflows": c["input_overflows"] + c["ring_overruns"]}

    what = f"file {os.path.basename(args.input)}" if args.input else f"microphone {args.device or '(default)'}"
    live = LiveStatus(clf.labels, counters=counters, model=model_summary(clf, args.model), source=what)
    notifier = SystemdNotifier()
    sinks = [TerminalView(clf.labels, source=what, status=status, rich=False if args.plain else None), live, notifier]
    stop = threading.Event()
    previous = {}

    def _handler(signum, frame):
        stop.set()

    try:
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl, model_sha256=clf.model_sha256))
        if args.db:
            sinks.append(SqliteSink(args.db, model_sha256=clf.model_sha256))
        if mqtt_config is not None:
            from ..runtime.mqtt import MqttSink

            live_parts["mqtt"] = MqttSink(mqtt_config, labels=clf.labels, snapshot=live.snapshot,
                                          model_name=clf.card.model_preset or "acoustic scene classifier")
            sinks.append(live_parts["mqtt"])
        if http_address is not None:
            from ..runtime.status_http import StatusServer

            server = StatusServer(http_address, status=live, db_path=args.db)
            sinks.append(server)
            stderr_line(f"edge-asc: status page at {server.url}")
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, _handler)
        if args.input:
            source = FileSource(args.input, realtime=args.realtime, speed=args.speed, loops=args.loop)
        else:
            if args.wait:
                from ..runtime.sources import import_sounddevice, wait_for_device

                def say(message: str) -> None:
                    for s in sinks:
                        s.event("waiting", message, device=args.device)

                def tick() -> None:
                    for s in sinks:
                        s.tick()

                sd = import_sounddevice()
                if wait_for_device(sd, args.device, stop=stop, tick=tick, log=say) is None:
                    for s in sinks:
                        s.event("stop", "", stopped_by="signal", windows=0)
                    stderr_line("edge-asc: stopped (signal) while waiting for the input device")
                    return 0
                source = MicSource(args.device, sd=sd)
            else:
                source = MicSource(args.device)
        # Played faster than real time, the ring holds proportionally more audio: the same slack in wall time.
        ring_s = 4.0 * max(1.0, args.speed) if args.input and args.realtime else 4.0
        pipeline = StreamPipeline(clf, input_rate=source.sample_rate, hop_seconds=args.hop, smooth=args.smooth,
                                  margin=args.margin, ring_seconds=ring_s)
        live_parts.update(source=source, pipeline=pipeline)
        sinks[0].source = f"{source.kind} {source.name}"  # the terminal view's title: the device's full name
    except BaseException:
        for sig, h in previous.items():
            signal.signal(sig, h)
        for s in sinks:
            s.close()
        raise
    try:
        summary = run_listen(pipeline, source, sinks, stop=stop, duration_s=args.duration)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    stderr_line(f"edge-asc: stopped ({summary.stopped_by}) after {summary.stream_seconds:.1f} s of audio: "
          f"{summary.windows} windows, {summary.scene_changes} scene changes, last scene "
          f"'{summary.final_label}', {summary.input_overflows} input overflows, {summary.ring_overruns} ring overruns, "
          f"{summary.device_losses} device losses; CPU {summary.cpu_seconds:.2f} s")
    return 0
