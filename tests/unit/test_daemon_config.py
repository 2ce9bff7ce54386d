"""The daemon's configuration and key ring: pure, no daemon running."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggerfish import ConfigurationError
from triggerfish.daemon.auth import KeyRing, hash_key, new_key
from triggerfish.daemon.config import RuntimeDefaults, load_config


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    key_hash = hash_key(new_key())
    toml = tmp_path / "triggerfish.toml"
    toml.write_text(
        f'port = 9000\nhost = "127.0.0.1"\napi_keys = ["{key_hash}"]\n[runtime]\nconcurrency = 8\n'
    )
    config = load_config(toml, environ={"TRIGGERFISH_PORT": "9100"}, drain_timeout=3.0)
    assert (config.port, config.drain_timeout, config.api_keys) == (9100, 3.0, (key_hash,))
    assert config.runtime.concurrency == 8 and config.runtime.max_replicas == 1
    assert config.store_target == Path(".triggerfish/triggerfish.db")
    flagged = load_config(toml, environ={"TRIGGERFISH_PORT": "9100"}, port=9200)
    assert flagged.port == 9200


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"TRIGGERFISH_PORT": "eighty"}, "port:"),
        ({"TRIGGERFISH_PORT": "70000"}, "port:"),
        ({"TRIGGERFISH_API_KEYS": "plain-text-key"}, "api_keys: 'plain-text-k"),
        ({"TRIGGERFISH_RUNTIME": "{not json"}, "TRIGGERFISH_RUNTIME is not JSON"),
        ({"TRIGGERFISH_RUNTIME": '{"concurrency": 0}'}, "runtime.concurrency:"),
        ({"TRIGGERFISH_NOPE": "1", "TRIGGERFISH_MAX_BODY_BYTES": "12"}, "max_body_bytes:"),
    ],
)
def test_bad_settings_name_the_field(environ: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(environ=environ)
    assert str(caught.value).startswith(words), str(caught.value)
    assert "plain-text-key" not in str(caught.value)  # a key is never echoed whole


def test_unknown_fields_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigurationError, match="prot"):
        load_config(toml, environ={})
    toml.write_text("port = \n")
    with pytest.raises(ConfigurationError, match=r"bad\.toml"):
        load_config(toml, environ={})
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("10.1.2.3", True),
    ],
)
def test_only_loopback_without_keys(host: str, refused: bool) -> None:
    config = load_config(environ={}, host=host)
    if refused:
        with pytest.raises(ConfigurationError, match="no API key is configured"):
            config.check_bind()
        load_config(environ={}, host=host, api_keys=[hash_key("k")]).check_bind()
    else:
        config.check_bind()


def test_key_ring_accepts_only_its_keys() -> None:
    first, second = new_key(), new_key()
    assert first != second and first.startswith("tf_") and len(first) > 40
    ring = KeyRing([hash_key(first), hash_key(second).upper().replace("SHA256:", "sha256:")])
    assert ring.accepts(first) and ring.accepts(second)
    assert not ring.accepts(first[:-1]) and not ring.accepts("") and not ring.accepts(None)
    assert not KeyRing([]) and not KeyRing([]).accepts(first)


def test_runtime_defaults_fill_only_what_a_service_json_leaves_out() -> None:
    defaults = RuntimeDefaults(concurrency=4, min_replicas=1, max_replicas=2)
    assert defaults.fill({"name": "s"})["runtime"] == {
        "concurrency": 4,
        "autoscaler": {"minReplicas": 1, "maxReplicas": 2},
    }
    given = {"name": "s", "runtime": {"concurrency": 9, "autoscaler": {"minReplicas": 5}}}
    assert defaults.fill(given)["runtime"] == {
        "concurrency": 9,
        "autoscaler": {"minReplicas": 5, "maxReplicas": 5},
    }
    malformed = {"name": "s", "runtime": "fast"}
    assert defaults.fill(malformed) == malformed  # refused later, by the service JSON check
