"""Helpers for the metrics tests: scrape an endpoint, read an exposition, find promtool and
prometheus (installed by tools/install_prometheus.sh when missing)."""

from __future__ import annotations

import functools
import http.client
import re
import shutil
import subprocess
from pathlib import Path

from tests.helpers import ROOT

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(
    address: str,
    token: str | None = None,
    accept: str = "",
    path: str = "/metrics",
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one GET from the metrics endpoint at ``address``."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Accept": accept} if accept else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a 0.0.4 exposition by (name, labels)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable line {line!r}"
        name, labels, value = match.groups()
        out[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample ``name`` whose labels include ``labels``, or None."""
    found = [v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{len(found)} samples of {name} {labels}"
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def prometheus_bin() -> tuple[Path | None, str]:
    """(directory with prometheus and promtool, "") or (None, why not), installing
    Debian's package through the project's script when it is missing."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return Path(shutil.which("promtool")).parent, ""  # type: ignore[arg-type]
    try:
        done = subprocess.run(
            ["sh", str(ROOT / "tools" / "install_prometheus.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot install prometheus: {exc}"
    if done.returncode != 0:
        return None, done.stderr.strip() or "tools/install_prometheus.sh failed"
    return Path(done.stdout.strip().splitlines()[-1]), ""


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    directory, why = prometheus_bin()
    assert directory is not None, why
    return subprocess.run(
        [str(directory / "promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
