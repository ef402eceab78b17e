"""Attacks on the agent's login: probes from the operator's own address, guessing from
one and from many addresses, connections opened before a block, a spray of addresses,
and guessable tokens.

Each test starts a real host with the agent (tests/hosts/app.py) and counts what the
agent really evaluated by its log: one 'authentication failed from' line per wrong
proof it checked; a refused attempt is not checked and not logged one by one.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import read_token_file, resolve
from agent.security import MIN_TOKEN_BITS, ConfigError, token_bits
from observer.client import connect
from observer.errors import AuthenticationError
from tests.attack.tools import guess, open_login, prove, source_addresses, tcp_from
from tests.helpers import ROOT, echo_ok, wait_until


def evaluated(host) -> int:
    """Wrong proofs the agent evaluated so far (each logs one line)."""
    return sum("authentication failed from" in line for line in host.process.stderr)


def evaluated_before_marker(host, source: str) -> int:
    """Wrong proofs evaluated before a marker guess from ``source`` (an address the
    limits let through), once its line is in: the agent logs in order, so every earlier
    line has arrived by then."""
    assert guess(host.address, source)["ok"] is False
    wait_until(
        lambda: any(
            f"authentication failed from {source}:" in line for line in host.process.stderr
        ),
        message="the marker guess is logged",
    )
    return evaluated(host) - 1


def wrong_token_login(host, other_keys) -> None:
    with pytest.raises(AuthenticationError, match="^authentication failed"):
        connect(
            host.address, token_file=other_keys.operator_token, fingerprint=host.keys.fingerprint
        )


def test_probes_and_scanners_from_the_operators_address_do_not_lock_it_out(make_host):
    """30 bare TCP connects (a port scanner, a tcpSocket probe), 10 TLS handshakes that
    stop there and 5 challenges answered with garbage, all from 127.0.0.1, the
    operator's own address. Ten of them used to lock the operator out for a minute."""
    host = make_host()
    for _ in range(30):
        tcp_from(host.address).close()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(10):
        ctx.wrap_socket(tcp_from(host.address)).close()
    for _ in range(5):
        login = open_login(host.address)
        login.sock.sendall(b"\x00\x00\x00\x05{]}x!")
        login.sock.close()
    with host.connect() as node:
        assert node.role == "operator"
    assert evaluated(host) == 0
    assert echo_ok(host.echo)


def test_a_block_ends_however_often_the_operator_retries(make_host, other_keys):
    """Three wrong tokens from 127.0.0.1 (limit 3 per 3 s window) block the address: the
    right token is refused too, without being evaluated. Retrying as fast as it can used to
    extend the block each time; now it ends 3 s after the failures."""
    host = make_host(env={"OBSERVER_AGENT_AUTH_FAILURES": "3", "OBSERVER_AGENT_AUTH_WINDOW": "3"})
    first = time.monotonic()
    for _ in range(3):
        wrong_token_login(host, other_keys)
    with pytest.raises(AuthenticationError, match="^authentication failed for"):
        host.connect()
    retries = []

    def retry():
        try:
            return host.connect()
        except AuthenticationError:
            retries.append(time.monotonic())
            return None

    node = wait_until(retry, timeout=3 + 2.0, message="the block ends")  # retries every 50 ms
    waited = time.monotonic() - first
    node.close()
    assert len(retries) >= 10 and 2.5 < waited < 3 + 2.0
    assert evaluated(host) == 3  # the refused attempts, the right token's too, were not
    assert any("too many failed logins" in line for line in host.process.stderr)
    assert echo_ok(host.echo)


def test_connections_opened_before_a_block_do_not_skip_it(make_host):
    """Six connections from 127.0.0.5 get their challenges first, then answer them one
    after another with wrong proofs: the block is checked when each proof arrives, so
    only the first three (the limit) are evaluated."""
    host = make_host(env={"OBSERVER_AGENT_AUTH_FAILURES": "3"})
    logins = [open_login(host.address, "127.0.0.5") for _ in range(6)]
    replies = [prove(login, None) for login in logins]
    refused = {"ok": False, "error": "auth", "message": "authentication failed"}
    assert replies == [refused] * 6
    assert evaluated_before_marker(host, "127.0.0.9") == 3
    assert echo_ok(host.echo)


def test_a_total_budget_caps_guessing_from_many_addresses(make_host, keys):
    """20 addresses guess twice each (per-address limit 3, total 8 per window): the agent
    evaluates 8 proofs, not 40. The operator who logged in before the attack still gets
    in; a fresh address with the right token waits until the window passes."""
    host = make_host(
        env={"OBSERVER_AGENT_AUTH_FAILURES": "3", "OBSERVER_AGENT_AUTH_FAILURES_TOTAL": "8"}
    )
    with host.connect() as node:  # 127.0.0.1 logged in: known to the agent
        assert node.role == "operator"
    for source in source_addresses(20) * 2:
        assert guess(host.address, source)["ok"] is False
    with host.connect() as node:
        assert node.role == "operator"
    token = keys.operator_token.read_text().strip()
    assert guess(host.address, "127.0.9.9", token)["ok"] is False
    # 127.0.0.1 logged in, so the spent total does not stop its (wrong) marker guess
    assert evaluated_before_marker(host, "127.0.0.1") == 8
    assert echo_ok(host.echo)


def test_a_spray_of_addresses_does_not_reset_a_block(make_host, other_keys):
    """Block 127.0.0.1 (3 wrong tokens), then connect and hang up from 10,050 other
    addresses. Those used to count as failures and, past 10,000 addresses, flush the
    oldest records, the block among them; now they are not failures at all."""
    host = make_host(env={"OBSERVER_AGENT_AUTH_FAILURES": "3"})
    for _ in range(3):
        wrong_token_login(host, other_keys)
    with pytest.raises(AuthenticationError):
        host.connect()
    for source in source_addresses(10_050):
        tcp_from(host.address, source).close()
    wait_until(lambda: echo_ok(host.echo), message="the host answers after the spray")
    with pytest.raises(AuthenticationError, match="^authentication failed for"):
        host.connect()
    assert evaluated(host) == 3


def _weak_keys(tmp_path, keys, token: str):
    weak = tmp_path / "weak-keys"
    weak.mkdir(mode=0o700)
    for name in ("agent.crt", "agent.key", "operator.token"):
        shutil.copy(keys.directory / name, weak / name)
    path = weak / "viewer.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return weak, path


def test_a_guessable_token_stops_the_agent_from_starting(tmp_path, keys):
    """A viewer token of 64 'a's used to pass (it was long enough); now `python -m agent
    run` refuses to start and says which file and how to make a good one."""
    weak, path = _weak_keys(tmp_path, keys, "a" * 64)
    script = tmp_path / "app.py"
    script.write_text("print('host ran', flush=True)\n")
    argv = ["-m", "agent", "run", "--bind", "127.0.0.1:0", "--keys", str(weak), "--", str(script)]
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "host ran" not in done.stdout
    assert str(path) in done.stderr and "too weak" in done.stderr
    assert "observer keygen" in done.stderr
    with pytest.raises(ConfigError, match=r"the operator token is too weak.*observer keygen"):
        resolve(
            "127.0.0.1:0",
            tls_cert=None,
            tls_key=None,
            tokens={"operator": "ab" * 40},
            name="t",
            env={},
        )


def test_keygen_tokens_are_strong_enough(tmp_path):
    from observer.keygen import generate

    for i in range(20):
        made = generate(tmp_path / str(i))
        for path in (made.viewer_token, made.operator_token):
            read_token_file(path)  # does not raise
    for make in (secrets.token_hex, secrets.token_urlsafe):
        for _ in range(2000):
            assert token_bits(make(16)) >= MIN_TOKEN_BITS  # exactly 128 random bits


@settings(max_examples=200, deadline=None)
@given(unit=st.text(min_size=1, max_size=15), times=st.integers(2, 40))
def test_a_repeated_short_string_is_never_strong(unit, times):
    assert token_bits(unit * times) <= len(unit) * 7


ALPHABETS = {"0123456789": 10, "0123456789abcdef": 16, "ABCDEF0123": 16, "abcxyz": 26}


@settings(max_examples=200, deadline=None)
@given(alphabet=st.sampled_from(sorted(ALPHABETS)), data=st.data())
def test_too_short_for_its_alphabet_is_weak(alphabet, data):
    """However random, a token too short for the alphabet it is drawn from is refused."""
    length = data.draw(
        st.integers(1, math.ceil(MIN_TOKEN_BITS / math.log2(ALPHABETS[alphabet])) - 1)
    )
    token = data.draw(st.text(alphabet=alphabet, min_size=length, max_size=length))
    assert token_bits(token) < MIN_TOKEN_BITS
    with pytest.raises(ConfigError, match="too weak"):
        resolve("127.0.0.1:0", tls_cert=None, tls_key=None, tokens={"viewer": token}, name="t")
