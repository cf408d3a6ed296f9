"""MQTT for ``edge-asc listen --mqtt``: availability with a last will, one message per scene change, a periodic
retained state, runtime events and Home Assistant MQTT discovery.

Topics under ``<prefix>/<node>`` (default ``edge-asc/<hostname>``):

* ``availability``: ``online`` / ``offline``, retained; ``offline`` is also the broker-held last will, so a killed
  process or a dead network shows as offline.
* ``state``: retained JSON, published every ``state_interval_s`` and after every scene change and runtime event:
  ``label``, ``confidence`` (0..1), ``top3`` ([[label, p], ...]), ``windows``, ``scene_changes``, ``overflows``,
  ``input_overflows``, ``ring_overruns``, ``device`` ('ok', 'lost', 'waiting', ...), ``device_losses``,
  ``mqtt_dropped``, ``cpu_percent``, ``rss_mb``, ``time`` (unix s).
* ``scene``: one JSON message per scene change (the JSONL ``scene_change`` record).
* ``event``: JSON runtime events (device lost / resumed, overflow warnings, start, stop).
* ``<discovery_prefix>/sensor/<node>/{scene,confidence,overflows}/config``: retained Home Assistant discovery, so
  the scene appears as an enum sensor with no YAML.

The listen loop never waits on the network: the sink's methods append to a bounded deque (the oldest message is
dropped, and counted, when it is full) and a publisher thread hands messages to paho-mqtt only while connected.
paho's own network thread reconnects with exponential back-off; messages queued meanwhile are delivered after, and
QoS 1 messages in flight when the link broke are re-sent by paho. JSONL and SQLite stay the source of truth.

Credentials never come from the command line: ``EDGE_ASC_MQTT_USER`` / ``EDGE_ASC_MQTT_PASSWORD`` or a file
holding ``user:password`` on its first line. ``paho-mqtt`` (the ``pi`` extra) is imported only when MQTT is used.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from .._io import stderr_line
from ..errors import ConfigError, MissingExtraError, UsageError
from .pipeline import WindowResult
from .sinks import Sink
from .tracker import SceneChange

USER_ENV = "EDGE_ASC_MQTT_USER"
PASSWORD_ENV = "EDGE_ASC_MQTT_PASSWORD"  # noqa: S105 - the name of a variable, not a password
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_TOPIC_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,7}$")


def import_paho():
    """Return ``paho.mqtt.client``. Raises MissingExtraError (with the pip command) when paho-mqtt is absent."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise MissingExtraError("paho-mqtt", "pi", "--mqtt") from None
    return mqtt


def node_name(text: str | None = None) -> str:
    """A topic segment / Home Assistant node id from ``text`` (default: this host's name): characters other than
    ``[A-Za-z0-9_-]`` become ``_``, at most 64 characters."""
    raw = text if text is not None else socket.gethostname().split(".")[0]
    out = re.sub(r"[^A-Za-z0-9_-]", "_", raw.strip())[:64]
    return out or "edge-asc"


def parse_url(url: str) -> tuple[bool, str, int]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> ``(tls, host, port)`` (ports default 1883 / 8883).

    Raises:
        UsageError: another scheme, no host, a bad port, or credentials in the URL (they would show in ``ps`` and
            in the service unit: use the environment or a credentials file).
    """
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise UsageError(f"--mqtt {url!r}: {exc}: use mqtt://host:1883 or mqtts://host:8883") from None
    if u.scheme not in DEFAULT_PORTS:
        raise UsageError(f"--mqtt {url!r}: the scheme must be mqtt:// or mqtts://, got {u.scheme or 'none'!r}")
    if u.username is not None or u.password is not None:
        raise UsageError(f"--mqtt: credentials do not belong in the URL (they show in 'ps'): set {USER_ENV} and "
                         f"{PASSWORD_ENV} or use --mqtt-credentials FILE")
    if not u.hostname:
        raise UsageError(f"--mqtt {url!r}: no host name: use mqtt://host:1883")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise UsageError(f"--mqtt {url!r}: a broker URL has no path or query: set the topic with --mqtt-prefix")
    return u.scheme == "mqtts", u.hostname, int(port or DEFAULT_PORTS[u.scheme])


def read_credentials(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                     ) -> tuple[str | None, str | None]:
    """``(user, password)`` from ``path`` (first line ``user:password``; the password may contain ':') or else from
    the ``EDGE_ASC_MQTT_USER`` / ``EDGE_ASC_MQTT_PASSWORD`` environment variables; ``(None, None)`` when neither.

    Raises:
        ConfigError: the file is missing, unreadable, readable by other users, or not ``user:password``.
    """
    if path is not None:
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                line = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"--mqtt-credentials {path}: cannot read it ({exc.strerror})") from None
        if st.st_mode & 0o004:
            raise ConfigError(f"--mqtt-credentials {path}: other users can read it: run 'chmod 600 {path}'")
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"--mqtt-credentials {path}: the first line must be 'user:password'")
        return user, password
    env = os.environ if env is None else env
    user = env.get(USER_ENV) or None
    password = env.get(PASSWORD_ENV)
    if password is not None and user is None:
        raise ConfigError(f"{PASSWORD_ENV} is set but {USER_ENV} is not: set both")
    return user, password


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """Where and how to publish. Build it from the command line with :func:`config_from_args`."""

    host: str
    """broker host name or address."""
    port: int = 1883
    """broker TCP port."""
    tls: bool = False
    """TLS (mqtts://); the broker's certificate and host name are verified."""
    ca_file: str | None = None
    """PEM CA bundle that signed the broker's certificate (default: the system's CAs)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    node: str = "edge-asc"
    """this device's topic segment and Home Assistant node id, ``[A-Za-z0-9_-]{1,64}``."""
    prefix: str = "edge-asc"
    """topic root; topics are ``<prefix>/<node>/...``."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant discovery prefix; '' turns discovery off."""
    state_interval_s: float = 30.0
    """seconds between periodic state messages (> 0)."""
    queue_size: int = 1000
    """messages held while the broker is away; beyond it the oldest are dropped and counted (>= 1)."""
    keepalive_s: int = 30
    """MQTT keep-alive in seconds: the broker publishes the last will about 1.5x this after a silent death."""
    backoff_s: tuple[float, float] = (1.0, 30.0)
    """first and maximum reconnect delay in seconds (doubling in between)."""
    qos: int = 1
    """QoS of every message (0 or 1)."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("MQTT host is empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"MQTT port must be in 1..65535, got {self.port}")
        if not _TOPIC_SEGMENT.match(self.node):
            raise ConfigError(f"MQTT node {self.node!r} must be 1-64 characters of [A-Za-z0-9_-]")
        if not _TOPIC_PREFIX.match(self.prefix):
            raise ConfigError(f"MQTT prefix {self.prefix!r} must be segments of [A-Za-z0-9_-] joined by '/'")
        if self.discovery_prefix and not _TOPIC_PREFIX.match(self.discovery_prefix):
            raise ConfigError(f"discovery prefix {self.discovery_prefix!r} must be segments of [A-Za-z0-9_-]")
        if not self.state_interval_s > 0:
            raise ConfigError(f"MQTT state interval must be > 0 seconds, got {self.state_interval_s}")
        if self.queue_size < 1:
            raise ConfigError(f"MQTT queue size must be >= 1, got {self.queue_size}")
        if self.keepalive_s < 5:
            raise ConfigError(f"MQTT keep-alive must be >= 5 s, got {self.keepalive_s}")
        lo, hi = self.backoff_s
        if not 0 < lo <= hi:
            raise ConfigError(f"MQTT back-off must satisfy 0 < first <= max, got {self.backoff_s}")
        if self.qos not in (0, 1):
            raise ConfigError(f"MQTT QoS must be 0 or 1, got {self.qos}")
        if self.ca_file is not None and not self.tls:
            raise ConfigError("an MQTT CA file needs mqtts://")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise ConfigError(f"--mqtt-ca {self.ca_file}: no such file")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def availability_topic(self) -> str:
        return f"{self.base}/availability"

    @property
    def state_topic(self) -> str:
        return f"{self.base}/state"

    @property
    def scene_topic(self) -> str:
        return f"{self.base}/scene"

    @property
    def event_topic(self) -> str:
        return f"{self.base}/event"

    @property
    def client_id(self) -> str:
        return f"edge-asc-{self.node}"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def config_from_args(url: str, *, ca_file: str | None = None, credentials: str | None = None,
                     node: str | None = None, prefix: str = "edge-asc", discovery_prefix: str = "homeassistant",
                     state_interval_s: float = 30.0, env: Mapping[str, str] | None = None) -> MqttConfig:
    """An :class:`MqttConfig` from listen's options. Raises UsageError / ConfigError with the option's name."""
    tls, host, port = parse_url(url)
    if ca_file is not None and not tls:
        raise UsageError("--mqtt-ca needs an mqtts:// broker URL")
    if node is not None and not _TOPIC_SEGMENT.match(node):
        raise UsageError(f"--mqtt-node {node!r} must be 1-64 characters of [A-Za-z0-9_-]")
    user, password = read_credentials(credentials, env)
    return MqttConfig(host=host, port=port, tls=tls, ca_file=ca_file, username=user, password=password,
                      node=node or node_name(), prefix=prefix.strip("/"), discovery_prefix=discovery_prefix.strip("/"),
                      state_interval_s=state_interval_s)


def discovery_messages(cfg: MqttConfig, labels: Sequence[str], *, model_name: str = "") -> list[tuple[str, str]]:
    """Retained Home Assistant discovery ``(topic, JSON payload)`` pairs: the scene (an enum sensor whose options
    are the model's labels, the state's other fields as attributes), its confidence in %, and the overflow
    counter (diagnostic). Empty when ``cfg.discovery_prefix`` is ''."""
    if not cfg.discovery_prefix:
        return []
    device = {"identifiers": [f"edge_asc_{cfg.node}"], "name": f"edge-asc {cfg.node}", "manufacturer": "edge-asc",
              "model": model_name or "acoustic scene classifier", "sw_version": __version__}
    common = {"state_topic": cfg.state_topic, "availability_topic": cfg.availability_topic,
              "payload_available": "online", "payload_not_available": "offline", "device": device,
              "origin": {"name": "edge-asc", "sw_version": __version__}}
    sensors = {
        "scene": {"name": "Scene", "icon": "mdi:ear-hearing", "device_class": "enum", "options": list(labels),
                  "value_template": "{{ value_json.label }}", "json_attributes_topic": cfg.state_topic},
        "confidence": {"name": "Scene confidence", "icon": "mdi:percent", "unit_of_measurement": "%",
                       "state_class": "measurement",
                       "value_template": "{{ (value_json.confidence * 100) | round(1) }}"},
        "overflows": {"name": "Audio overflows", "icon": "mdi:alert", "entity_category": "diagnostic",
                      "state_class": "total_increasing", "value_template": "{{ value_json.overflows }}"},
    }
    out = []
    for key, extra in sensors.items():
        # default_entity_id, not object_id: Home Assistant 2025.10 deprecated object_id (to stop working in 2026.4).
        payload = {**extra, **common, "unique_id": f"edge_asc_{cfg.node}_{key}",
                   "default_entity_id": f"sensor.edge_asc_{cfg.node}_{key}"}
        out.append((f"{cfg.discovery_prefix}/sensor/{cfg.node}/{key}/config",
                    json.dumps(payload, sort_keys=True, separators=(",", ":"))))
    return out


def _stderr(message: str) -> None:
    stderr_line(message)


class MqttSink(Sink):
    """Publishes a listen run over MQTT (see the module docstring for topics and payloads).

    Args:
        config: broker and topics.
        labels: the model's class names (the discovery sensor's options).
        snapshot: called from the publisher thread for the state payload (a
            :meth:`~edge_asc.runtime.status.LiveStatus.snapshot`); ``mqtt_dropped`` and ``mqtt_connected`` are added.
        model_name: shown as the Home Assistant device's model.
        log: where connection changes and drop warnings go (one line each; default stderr).
        log_every_s: at most one drop warning per this many seconds.

    Raises:
        MissingExtraError: paho-mqtt is not installed.
        ConfigError: the TLS CA file cannot be loaded.
    """

    def __init__(self, config: MqttConfig, *, labels: Sequence[str], snapshot: Callable[[], dict[str, Any]],
                 model_name: str = "", log: Callable[[str], None] = _stderr, log_every_s: float = 30.0) -> None:
        mqtt = import_paho()
        self.config = config
        self.labels = tuple(labels)
        self._snapshot = snapshot
        self._log = log
        self._log_every_s = float(log_every_s)
        self._discovery = discovery_messages(config, self.labels, model_name=model_name)
        self._queue: deque[tuple[str, str, bool]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._state_due = time.monotonic()
        self.connected = False
        self.connects = 0
        self.dropped = 0
        self.published = 0
        self._logged_dropped = 0
        self._logged_at = -1e9
        self._last_refusal = ""
        self._failing = False
        self._ok, self._no_conn = mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN

        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        if config.username is not None:
            c.username_pw_set(config.username, config.password)
        if config.tls:
            try:
                c.tls_set(ca_certs=config.ca_file)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"--mqtt-ca {config.ca_file}: cannot load it ({exc})") from None
        c.will_set(config.availability_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=config.backoff_s[0], max_delay=config.backoff_s[1])
        c.max_queued_messages_set(config.queue_size)  # paho's own queue (messages in flight) is bounded too
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        self.client = c
        c.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        c.loop_start()  # paho's network thread: connects, reconnects with back-off, re-sends QoS 1 in flight
        self._thread = threading.Thread(target=self._run, name="edge-asc-mqtt", daemon=True)
        self._thread.start()

    # ---- paho's network thread ----------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            why = str(reason_code)
            if why != self._last_refusal:
                self._log(f"edge-asc: MQTT broker {self.config.url} refused the connection ({why}): check the "
                          f"credentials ({USER_ENV}/{PASSWORD_ENV} or --mqtt-credentials); retrying")
                self._last_refusal = why
            return
        self._last_refusal = ""
        self._failing = False
        client.publish(self.config.availability_topic, "online", qos=1, retain=True)
        for topic, payload in self._discovery:
            client.publish(topic, payload, qos=1, retain=True)
        with self._cond:
            self.connected = True
            self.connects += 1
            self._state_due = time.monotonic()
            self._cond.notify_all()
        again = " again" if self.connects > 1 else ""
        self._log(f"edge-asc: MQTT connected{again} to {self.config.url} as {self.config.base}")

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._failing:
            self._failing = True
            self._log(f"edge-asc: MQTT cannot connect to {self.config.url} (broker down, network, or TLS): retrying "
                      f"with back-off {self.config.backoff_s[0]:g}-{self.config.backoff_s[1]:g} s")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            was = self.connected
            self.connected = False
            closing = self._closing
        if was and not closing:
            self._log(f"edge-asc: MQTT lost the broker {self.config.url} ({reason_code}): reconnecting with "
                      f"back-off {self.config.backoff_s[0]:g}-{self.config.backoff_s[1]:g} s, queueing up to "
                      f"{self.config.queue_size} messages")

    # ---- sink side: the listen loop's thread; appends only ------------------------------------------------------
    def _put(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        msg = (topic, json.dumps(payload, separators=(",", ":")), retain)
        with self._cond:
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(msg)
            self._state_due = 0.0
            self._cond.notify()

    def window(self, result: WindowResult) -> None:
        pass  # the periodic state carries the latest window

    def change(self, change: SceneChange) -> None:
        self._put(self.config.scene_topic, change.to_dict())

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        self._put(self.config.event_topic, {"type": kind, "message": message, "wall_time": round(time.time(), 3),
                                            **fields})

    # ---- publisher thread ---------------------------------------------------------------------------------------
    def state_payload(self) -> dict[str, Any]:
        s = self._snapshot()
        s["mqtt_dropped"] = self.dropped
        s["mqtt_connected"] = self.connected
        return s

    def _publish(self, topic: str, payload: str, retain: bool) -> bool:
        try:
            info = self.client.publish(topic, payload, qos=self.config.qos, retain=retain)
        except (ValueError, RuntimeError, OSError):  # paho raises for an oversized payload or a closed socket
            return False
        # QoS 1 while the link just broke: paho keeps the message and sends it after the reconnect (NO_CONN).
        if info.rc != self._ok and not (info.rc == self._no_conn and self.config.qos == 1):
            return False
        self.published += 1
        return True

    def _run(self) -> None:
        cfg = self.config
        while True:
            with self._cond:
                while not self._closing:
                    now = time.monotonic()
                    if self.connected and (self._queue or now >= self._state_due):
                        break
                    wait = max(0.05, min(1.0, self._state_due - now)) if self.connected else 1.0
                    self._maybe_log_drops()
                    self._cond.wait(wait)
                if self._closing:
                    return
                msg = self._queue.popleft() if self._queue else None
            if msg is not None:
                if not self._publish(*msg):
                    with self._cond:  # not handed over: keep it first in line for after the reconnect
                        if len(self._queue) >= cfg.queue_size:
                            self.dropped += 1
                        else:
                            self._queue.appendleft(msg)
                    time.sleep(0.05)
                continue
            self._publish_state()

    def _publish_state(self) -> bool:
        payload = self.state_payload()
        if not payload.get("label"):  # Home Assistant's enum sensor accepts only a label: wait for the first window
            with self._cond:
                self._state_due = time.monotonic() + min(1.0, self.config.state_interval_s)
            return False
        ok = self._publish(self.config.state_topic, json.dumps(payload, separators=(",", ":")), True)
        with self._cond:
            self._state_due = time.monotonic() + (self.config.state_interval_s if ok else 0.5)
        return ok

    def _maybe_log_drops(self) -> None:  # called with the condition held, from the publisher thread
        now = time.monotonic()
        if self.dropped > self._logged_dropped and now - self._logged_at >= self._log_every_s:
            self._log(f"edge-asc: warning: MQTT queue full ({self.config.queue_size} messages): {self.dropped} "
                      f"dropped so far (oldest first); the JSONL/SQLite logs have everything")
            self._logged_dropped, self._logged_at = self.dropped, now

    # ---- shutdown -----------------------------------------------------------------------------------------------
    def close(self, flush_s: float = 3.0) -> None:
        """Deliver what is queued (up to ``flush_s`` seconds while connected), publish the final state and
        ``offline`` (retained), disconnect cleanly (so the broker discards the last will), stop both threads.
        Never raises: the listen loop's other sinks must still close."""
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline:  # a short run may end before the first connection: give it flush_s
            with self._cond:
                if not self._queue:
                    break
                self._cond.notify()
            time.sleep(0.02)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=2.0)
        with self._cond:
            self._maybe_log_drops()
        if self.connected:
            infos = []
            payload = self.state_payload()
            if payload.get("label"):
                infos.append(self.client.publish(self.config.state_topic, json.dumps(payload, separators=(",", ":")),
                                                 qos=1, retain=True))
            infos.append(self.client.publish(self.config.availability_topic, "offline", qos=1, retain=True))
            for info in infos:
                try:
                    info.wait_for_publish(timeout=2.0)
                except (ValueError, RuntimeError):  # the link broke meanwhile: the last will says offline instead
                    break
            self.client.disconnect()
        self.client.loop_stop()
