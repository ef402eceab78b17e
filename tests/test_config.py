"""Agent configuration from OBSERVER_AGENT_* variables and keygen directories."""

from __future__ import annotations

import pytest

from agent.config import key_dir_files, resolve
from agent.security import ConfigError


def _resolve(env, **kw):
    args = {"tls_cert": None, "tls_key": None, "tokens": None, "name": None, **kw}
    return resolve(kw.pop("bind", None), env=env, **args)


def test_keygen_directory_supplies_cert_key_and_tokens(keys):
    config = _resolve({"OBSERVER_AGENT_TOKEN_DIR": str(keys.directory)})
    assert config.tls_cert == str(keys.cert) and config.tls_key == str(keys.key)
    assert config.tokens == {
        "viewer": keys.viewer_token.read_text().strip(),
        "operator": keys.operator_token.read_text().strip(),
    }
    assert (config.host, config.port) == ("127.0.0.1", 7330)
    assert set(key_dir_files(keys.directory)) == {"tls_cert", "tls_key", "viewer", "operator"}


def test_explicit_variables_win_over_the_directory(keys, other_keys):
    env = {
        "OBSERVER_AGENT_TOKEN_DIR": str(keys.directory),
        "OBSERVER_AGENT_OPERATOR_TOKEN_FILE": str(other_keys.operator_token),
        "OBSERVER_AGENT_BIND": "127.0.0.2:9000",
        "OBSERVER_AGENT_NAME": "api-7",
    }
    config = _resolve(env)
    assert config.tokens["operator"] == other_keys.operator_token.read_text().strip()
    assert config.tokens["viewer"] == keys.viewer_token.read_text().strip()
    assert (config.host, config.port, config.name) == ("127.0.0.2", 9000, "api-7")


def test_bad_numbers_are_refused_by_name():
    with pytest.raises(ConfigError, match="OBSERVER_AGENT_HISTORY_IDLE"):
        _resolve({"OBSERVER_AGENT_HISTORY_IDLE": "soon"})
    with pytest.raises(ConfigError, match="OBSERVER_AGENT_AUTH_FAILURES"):
        _resolve({"OBSERVER_AGENT_AUTH_FAILURES": "many"})
    assert _resolve({"OBSERVER_AGENT_HISTORY_IDLE": "0"}).history_idle_interval == 0.0
