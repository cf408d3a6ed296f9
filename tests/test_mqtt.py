"""`edge-asc listen --mqtt` against a real Mosquitto broker (password file; once with TLS from a CA made here):
Home Assistant discovery, retained availability, scene changes equal to the JSONL log, the last will on kill -9,
a broker restart mid-stream, a bounded queue that never blocks the listen loop; plus URL / credential parsing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.errors import ConfigError, UsageError
from edge_asc.runtime.mqtt import (
    MqttConfig,
    config_from_args,
    discovery_messages,
    node_name,
    parse_url,
    read_credentials,
)

require("paho.mqtt.client")
require("tensorflow")  # builds the tiny test model
from mqtt_broker import PASSWORD, USER, Broker, Recorder, free_port
from runtime_models import LABELS, high, low, write_model

SR = 16_000
CREDS = {"EDGE_ASC_MQTT_USER": USER, "EDGE_ASC_MQTT_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("mqtt") / "tiny.tflite")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """low 3 s, high 3 s (two scenes, one change)."""
    p = tmp_path_factory.mktemp("mqtt_wav") / "clip.wav"
    write_audio(p, np.concatenate([low(3.0, SR), high(3.0, SR)]), SR)
    return str(p)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """low 4 s, high 6 s, low 6 s: paced in real time for the kill and restart tests."""
    p = tmp_path_factory.mktemp("mqtt_wav") / "long.wav"
    write_audio(p, np.concatenate([low(4.0, SR, 0), high(6.0, SR, 1), low(6.0, SR, 2)]), SR)
    return str(p)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def tls_broker(tmp_path):
    b = Broker(tmp_path / "tls_broker", tls=True)
    b.start()
    yield b
    b.stop()


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def payloads(rec, topic):
    return [json.loads(m[2]) for m in rec.on(topic)]


# ---- parsing and validation (no broker) -----------------------------------------------------------------------
def test_parse_url():
    assert parse_url("mqtt://broker.local") == (False, "broker.local", 1883)
    assert parse_url("mqtts://10.0.0.2") == (True, "10.0.0.2", 8883)
    assert parse_url("mqtt://h:1884/") == (False, "h", 1884)


@pytest.mark.parametrize("url, match", [
    ("http://h:1883", "scheme must be mqtt:// or mqtts://"),
    ("mqtt://user:pw@h:1883", "credentials do not belong in the URL"),
    ("mqtt://:1883", "no host name"),
    ("mqtt://h:99999", "out of range"),
    ("mqtt://h/topic", "no path or query"),
])
def test_bad_urls(url, match):
    with pytest.raises(UsageError, match=match):
        parse_url(url)


def test_credentials_from_env_and_file(tmp_path):
    assert read_credentials(None, {}) == (None, None)
    assert read_credentials(None, CREDS) == (USER, PASSWORD)
    with pytest.raises(ConfigError, match="EDGE_ASC_MQTT_USER is not"):
        read_credentials(None, {"EDGE_ASC_MQTT_PASSWORD": "x"})
    f = tmp_path / "cred"
    f.write_text(f"{USER}:{PASSWORD}\nignored\n")
    os.chmod(f, 0o600)
    assert read_credentials(f, {}) == (USER, PASSWORD)  # the password keeps its ':'
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_credentials(f, {})
    f.write_text("no-colon\n")
    os.chmod(f, 0o600)
    with pytest.raises(ConfigError, match="user:password"):
        read_credentials(f, {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_credentials(tmp_path / "missing", {})


def test_config_validation_and_node_names(tmp_path):
    assert node_name("pi 4.kitchen/#") == "pi_4_kitchen__"
    cfg = config_from_args("mqtt://h", node="pi1", env={})
    assert cfg.state_topic == "edge-asc/pi1/state" and cfg.availability_topic == "edge-asc/pi1/availability"
    assert "password" not in repr(MqttConfig(host="h", password="secret", username="u"))  # noqa: S106
    with pytest.raises(UsageError, match="--mqtt-ca needs an mqtts://"):
        config_from_args("mqtt://h", ca_file=str(tmp_path), env={})
    with pytest.raises(UsageError, match="--mqtt-node"):
        config_from_args("mqtt://h", node="a/b", env={})
    for kw, match in [({"prefix": "a/+/b"}, "prefix"), ({"state_interval_s": 0}, "interval"),
                      ({"queue_size": 0}, "queue size"), ({"backoff_s": (2.0, 1.0)}, "back-off"),
                      ({"qos": 2}, "QoS"), ({"tls": True, "ca_file": str(tmp_path / "none.pem")}, "no such file")]:
        with pytest.raises(ConfigError, match=match):
            MqttConfig(host="h", **kw)


def test_discovery_payloads():
    cfg = MqttConfig(host="h", node="pi1")
    msgs = dict(discovery_messages(cfg, LABELS, model_name="edge"))
    assert sorted(msgs) == [f"homeassistant/sensor/pi1/{k}/config" for k in ("confidence", "overflows", "scene")]
    scene = json.loads(msgs["homeassistant/sensor/pi1/scene/config"])
    assert scene["device_class"] == "enum" and scene["options"] == list(LABELS)
    assert scene["state_topic"] == "edge-asc/pi1/state" and scene["value_template"] == "{{ value_json.label }}"
    assert scene["availability_topic"] == "edge-asc/pi1/availability"
    assert scene["unique_id"] == "edge_asc_pi1_scene" and scene["device"]["identifiers"] == ["edge_asc_pi1"]
    # the entity id is suggested with default_entity_id (Home Assistant >= 2025.10 deprecates object_id)
    assert scene["default_entity_id"] == "sensor.edge_asc_pi1_scene" and "object_id" not in scene
    conf = json.loads(msgs["homeassistant/sensor/pi1/confidence/config"])
    assert conf["unit_of_measurement"] == "%" and conf["device"] == scene["device"]
    assert discovery_messages(MqttConfig(host="h", discovery_prefix=""), LABELS) == []


def test_cli_usage_errors(model_path, clip, capsys):
    base = ["listen", "--model", model_path, "--input", clip]
    assert main([*base, "--mqtt", "mqtt://u:p@h"]) == 2
    assert "credentials do not belong in the URL" in capsys.readouterr().err
    assert main([*base, "--mqtt-ca", clip]) == 2
    assert main([*base, "--mqtt", "mqtt://h", "--mqtt-interval", "0"]) == 2
    assert main([*base, "--mqtt", "mqtt://h", "--mqtt-node", "a b"]) == 2


def test_listen_without_mqtt_never_imports_paho(model_path, clip):
    code = ("import sys\nfrom edge_asc.cli import main\n"
            f"assert main(['listen', '--model', {model_path!r}, '--input', {clip!r}, '--plain']) == 0\n"
            "assert not [m for m in sys.modules if m.startswith('paho')], 'paho imported'\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ---- a real broker --------------------------------------------------------------------------------------------
def test_listen_publishes_discovery_scenes_state_and_availability(monkeypatch, broker, model_path, clip, tmp_path,
                                                                  capsys):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    rec = Recorder(broker)
    j = tmp_path / "e.jsonl"
    try:
        rc = main(["listen", "--model", model_path, "--input", clip, "--hop", "0.25", "--smooth", "2", "--plain",
                   "--jsonl", str(j), "--mqtt", broker.url, "--mqtt-node", "pi1", "--mqtt-interval", "0.2"])
        assert rc == 0
        rec.wait_for(lambda m: m[1] == "edge-asc/pi1/availability" and m[2] == "offline")
    finally:
        rec.close()
    err = capsys.readouterr().err
    assert f"MQTT connected to {broker.url} as edge-asc/pi1" in err
    avail = [m[2] for m in rec.on("edge-asc/pi1/availability")]
    assert avail == ["online", "offline"]
    # One MQTT message per scene change, equal to the JSONL record (the source of truth) minus the model id.
    changes = [{k: v for k, v in r.items() if k != "model_sha256"} for r in jsonl(j) if r["type"] == "scene_change"]
    assert [c["label"] for c in changes] == ["low", "high"]
    assert payloads(rec, "edge-asc/pi1/scene") == changes
    events = [e["type"] for e in payloads(rec, "edge-asc/pi1/event")]
    assert events[0] == "start" and events[-1] == "stop"
    states = payloads(rec, "edge-asc/pi1/state")
    last = states[-1]
    assert last["label"] == "high" and 0 < last["confidence"] <= 1 and len(last["top3"]) == 3
    assert last["top3"][0][0] == "high" and last["scene_changes"] == 2 and last["windows"] > 10
    assert last["overflows"] == 0 and last["mqtt_dropped"] == 0 and last["device"] == "stopped"
    assert len(rec.on("homeassistant/sensor/pi1/scene/config")) == 1

    # A client that connects later gets the retained messages: discovery, offline, the last state.
    late = Recorder(broker)
    try:
        late.wait_for(lambda m: m[1] == "edge-asc/pi1/state")
        time.sleep(0.3)
        retained = {m[1]: m[2] for m in late.snapshot() if m[3]}
    finally:
        late.close()
    assert retained["edge-asc/pi1/availability"] == "offline"
    assert json.loads(retained["edge-asc/pi1/state"])["label"] == "high"
    scene_cfg = json.loads(retained["homeassistant/sensor/pi1/scene/config"])
    assert scene_cfg["options"] == list(LABELS) and scene_cfg["state_topic"] == "edge-asc/pi1/state"
    assert "edge-asc/pi1/scene" not in retained  # scene changes are events, not state


def test_wrong_password_is_logged_and_listening_goes_on(monkeypatch, broker, model_path, clip, tmp_path, capsys):
    monkeypatch.setenv("EDGE_ASC_MQTT_USER", USER)
    monkeypatch.setenv("EDGE_ASC_MQTT_PASSWORD", "wrong")
    j = tmp_path / "e.jsonl"
    t0 = time.monotonic()
    assert main(["listen", "--model", model_path, "--input", clip, "--plain", "--jsonl", str(j),
                 "--mqtt", broker.url, "--mqtt-node", "pi2"]) == 0
    assert time.monotonic() - t0 < 15  # at most the close's flush wait on top of the run
    err = capsys.readouterr().err
    assert "refused the connection" in err and "Not authorized" in err and "stopped (end_of_input)" in err
    assert jsonl(j)[-1]["type"] == "stop"


def test_tls_broker_with_ca_file(monkeypatch, tls_broker, model_path, clip, tmp_path, capsys):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    rec = Recorder(tls_broker)
    try:
        assert main(["listen", "--model", model_path, "--input", clip, "--plain", "--mqtt", tls_broker.url,
                     "--mqtt-ca", str(tls_broker.tls["ca"]), "--mqtt-node", "tlspi"]) == 0
        rec.wait_for(lambda m: m[1] == "edge-asc/tlspi/availability" and m[2] == "offline")
    finally:
        rec.close()
    assert [m[2] for m in rec.on("edge-asc/tlspi/availability")] == ["online", "offline"]
    assert [p["label"] for p in payloads(rec, "edge-asc/tlspi/scene")][-1] == "high"
    assert "MQTT connected to mqtts://" in capsys.readouterr().err


def test_tls_with_an_unknown_ca_never_connects(monkeypatch, tls_broker, model_path, clip, tmp_path, capsys):
    from mqtt_broker import make_tls_files

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    other = make_tls_files(tmp_path / "other_ca")["ca"]
    assert main(["listen", "--model", model_path, "--input", clip, "--plain", "--mqtt", tls_broker.url,
                 "--mqtt-ca", str(other), "--mqtt-node", "tlspi"]) == 0
    err = capsys.readouterr().err
    assert "MQTT cannot connect to mqtts://" in err and "MQTT connected" not in err


def test_queue_is_bounded_and_never_blocks_without_a_broker(tmp_path):
    from edge_asc.runtime.mqtt import MqttSink
    from edge_asc.runtime.tracker import SceneChange

    lines = []
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), node="nobroker", queue_size=5, backoff_s=(0.1, 0.2))
    sink = MqttSink(cfg, labels=LABELS, snapshot=lambda: {"label": "low"}, log=lines.append, log_every_s=0.0)
    t0 = time.perf_counter()
    for i in range(200):
        sink.change(SceneChange(start_s=float(i), label="low", confidence=0.9, top3=(("low", 0.9),)))
    per_call = (time.perf_counter() - t0) / 200
    assert per_call < 1e-3  # appending only: no network on the listen loop's thread
    time.sleep(1.5)
    assert sink.dropped == 195 and len(sink._queue) == 5
    t0 = time.monotonic()
    sink.close(flush_s=0.5)
    assert time.monotonic() - t0 < 5
    assert any("MQTT cannot connect" in x for x in lines)
    assert any("MQTT queue full (5 messages): 195 dropped" in x for x in lines)


def test_broker_that_comes_up_after_the_start_gets_what_was_queued(tmp_path):
    """At boot the broker (e.g. Home Assistant's) may start after listen: the first connection is retried with
    back-off and the scene change queued meanwhile is delivered once it is up."""
    from edge_asc.runtime.mqtt import MqttSink
    from edge_asc.runtime.tracker import SceneChange

    b = Broker(tmp_path / "late_broker")  # configured, not started yet
    lines = []
    cfg = MqttConfig(host="127.0.0.1", port=b.port, node="late", username=USER, password=PASSWORD,
                     backoff_s=(0.2, 1.0))
    sink = MqttSink(cfg, labels=LABELS, snapshot=lambda: {"label": "low"}, log=lines.append)
    change = SceneChange(start_s=1.0, label="low", confidence=0.9, top3=(("low", 0.9),))
    sink.change(change)
    rec = None
    try:
        time.sleep(1.5)
        assert not sink.connected and any("MQTT cannot connect" in x for x in lines)
        b.start()
        t_up = time.monotonic()
        # The broker's own log shows the queued change arriving (a subscriber could connect after it).
        while "'edge-asc/late/scene'" not in b.log():
            assert time.monotonic() - t_up < 5, b.log()[-2000:]  # the back-off is capped at 1 s
            time.sleep(0.05)
        assert "Received PUBLISH from edge-asc-late" in b.log()
        rec = Recorder(b)
        rec.wait_for(lambda m: m[1] == "edge-asc/late/availability" and m[2] == "online" and m[3])
    finally:
        sink.close(flush_s=0.5)
        if rec is not None:
            rec.close()
        b.stop()
    assert sink.dropped == 0 and any("MQTT connected to" in x for x in lines)


def _listen_proc(model_path, wav, url, node, tmp_path, *extra):
    env = {**os.environ, **CREDS, "PYTHONUNBUFFERED": "1"}
    j = tmp_path / f"{node}.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "edge_asc", "listen", "--model", model_path, "--input", wav,
                          "--realtime", "--hop", "0.25", "--smooth", "2", "--plain", "--jsonl", str(j),
                          "--mqtt", url, "--mqtt-node", node, "--mqtt-interval", "0.5", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return p, j


def test_last_will_on_kill_9(broker, model_path, long_clip, tmp_path):
    rec = Recorder(broker)
    p, _ = _listen_proc(model_path, long_clip, broker.url, "killed", tmp_path)
    try:
        rec.wait_for(lambda m: m[1] == "edge-asc/killed/state", timeout=60)
        assert [m[2] for m in rec.on("edge-asc/killed/availability")] == ["online"]
        t_kill = time.monotonic()
        p.send_signal(signal.SIGKILL)  # no handler, no clean disconnect: the broker publishes the will
        p.communicate(timeout=20)
        m = rec.wait_for(lambda m: m[1] == "edge-asc/killed/availability" and m[2] == "offline", timeout=20)
        assert m[0] >= t_kill
    finally:
        if p.poll() is None:
            p.kill()
        rec.close()
    late = Recorder(broker)
    try:
        m = late.wait_for(lambda m: m[1] == "edge-asc/killed/availability")
    finally:
        late.close()
    assert m[2] == "offline" and m[3]  # retained


@pytest.mark.slow
def test_broker_restart_mid_stream_delivers_the_queued_scene_change(broker, model_path, long_clip, tmp_path):
    rec = Recorder(broker)
    p, j = _listen_proc(model_path, long_clip, broker.url, "restart", tmp_path)
    try:
        m = rec.wait_for(lambda m: m[1] == "edge-asc/restart/state", timeout=60)
        assert json.loads(m[2])["label"] == "low"
        broker.stop()  # at about 1-2 s of stream time; the change to 'high' comes at about 4 s, while it is down
        w_down = time.time()
        deadline = time.monotonic() + 30
        while not any(r["type"] == "scene_change" and r["label"] == "high" for r in jsonl(j)):
            assert time.monotonic() < deadline, "no change to 'high' in the JSONL log"
            time.sleep(0.1)
        time.sleep(0.5)
        broker.start()
        t_up, w_up = time.monotonic(), time.time()
        rec.wait_for(lambda m: m[1] == "edge-asc/restart/availability" and m[2] == "online" and m[0] > t_up,
                     timeout=40)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        rec.wait_for(lambda m: m[1] == "edge-asc/restart/availability" and m[2] == "offline", timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        rec.close()
    assert "MQTT lost the broker" in err and "MQTT connected again" in err
    changes = [r for r in jsonl(j) if r["type"] == "scene_change"]
    assert [c["label"] for c in changes] == ["low", "high", "low"]
    scene_msgs = rec.on("edge-asc/restart/scene")
    # Every change reached the broker, in order, including the one decided while it was down (delivered after).
    assert [json.loads(m[2]) for m in scene_msgs] == [{k: v for k, v in c.items() if k != "model_sha256"}
                                                      for c in changes]
    assert w_down < changes[1]["wall_time"] < w_up and scene_msgs[1][0] > t_up
    last_state = json.loads(rec.on("edge-asc/restart/state")[-1][2])
    assert last_state["mqtt_dropped"] == 0 and last_state["label"] == "low"
