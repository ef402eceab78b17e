#!/usr/bin/env python3
"""Run the whole test suite on every supported CPython, one version after another.

``make test-matrix`` runs this with the host's ``python3`` (stdlib only). For each
version it finds an interpreter, keeps a virtual environment with the project's
``[dev]`` dependencies (remade only when ``pyproject.toml`` or the interpreter
changes), runs ``python -m pytest -q`` headless with pytest's output shown live and
kept in ``build/matrix/<version>.log``, and prints a table at the end (also written to
``build/matrix/summary.md``). It exits non-zero if any version failed or could not run.

Where an interpreter comes from, first match wins:

1. ``python3.X`` on ``PATH`` (pyenv shims that do not resolve are passed over);
2. pyenv: the newest ``$(pyenv root)/versions/3.X.N``;
3. for 3.14 and 3.15 only, a Debian unstable chroot built once by
   ``tools/sid_chroot.sh`` (root only) and cached outside the checkout.

Host versions get a venv at ``.venv-3.X`` in the checkout; chroot versions at
``/venvs/3.X`` inside the chroot. Neither is an editable install: the dependencies are
installed and a ``.pth`` file puts the checkout on ``sys.path``, so no egg-info is
written into the shared checkout and host and chroot cannot disturb each other (or
``make test``'s ``.venv``).

Environment: ``VERSIONS`` or ``MATRIX_VERSIONS`` (e.g. ``"3.12 3.14"``),
``MATRIX_ALLOW_MISSING=1`` (a version with no interpreter does not fail the run),
``MATRIX_PYTEST_ARGS`` (extra pytest arguments), ``RUNTIME_OBSERVER_CHROOT`` (where the
chroot lives, default ``/var/cache/runtime-observer/sid``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
ALL_VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
CHROOT_VERSIONS = ("3.14", "3.15")
CHROOT_SCRIPT = CHECKOUT / "tools" / "sid_chroot.sh"
CHROOT_SRC = "/src"  # where tools/sid_chroot.sh mounts the checkout
LOG_DIR = CHECKOUT / "build" / "matrix"
STAMP_NAME = ".matrix-installed"
PTH_NAME = "runtime_observer_checkout.pth"
# Answers "which interpreter is this, and can it make a venv with pip?".
PROBE = (
    "import sys, venv, ensurepip; "
    "print('%d.%d' % sys.version_info[:2], sys.version.split()[0], sys.executable)"
)


class Unavailable(Exception):
    """No interpreter for a version, or its environment could not be set up."""


@dataclass
class Interpreter:
    """A CPython to test with, and how to run commands next to it.

    ``prefix`` is prepended to every command (empty on the host, the chroot runner for
    the chroot); ``root`` maps paths as the command sees them to paths on the host.
    """

    version: str
    executable: str
    patch: str
    source: str
    prefix: list[str] = field(default_factory=list)
    root: Path = Path("/")
    src: str = str(CHECKOUT)
    venv: str = ""

    def host_path(self, inner: str) -> Path:
        """The host path of ``inner``, a path as commands run for this interpreter see it."""
        return self.root / inner.lstrip("/")

    def describe(self) -> str:
        """``source: path (patch version)`` for the table."""
        return f"{self.source}: {self.executable} ({self.patch})"


@dataclass
class Result:
    """What happened to one version."""

    version: str
    interpreter: str = "-"
    status: str = "unavailable"  # passed, failed, error, unavailable, interrupted
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    setup_s: float = 0.0
    tests_s: float = 0.0
    note: str = ""
    failures: list[str] = field(default_factory=list)


def probe(command: Sequence[str]) -> tuple[str, str, str] | None:
    """(``3.X``, patch version, ``sys.executable``) of the interpreter, or None."""
    try:
        out = subprocess.run(
            [*command, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    short, patch, executable = out.stdout.split(maxsplit=2)
    return short, patch, executable.strip()


def from_path(version: str) -> Interpreter | None:
    """``python3.X`` from any ``PATH`` entry that really runs 3.X with venv and pip."""
    seen: set[str] = set()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry or ".") / f"python{version}"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if str(candidate) in seen:
            continue
        seen.add(str(candidate))
        found = probe([str(candidate)])
        if found and found[0] == version:
            return Interpreter(version, found[2], found[1], "PATH")
    return None


def pyenv_root() -> Path | None:
    """pyenv's root directory, if pyenv is installed."""
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def from_pyenv(version: str) -> Interpreter | None:
    """The newest pyenv-installed ``3.X.N`` (plain CPython builds only, no ``t``/``a1``)."""
    root = pyenv_root()
    if root is None or not (root / "versions").is_dir():
        return None
    pattern = re.compile(rf"^{re.escape(version)}\.(\d+)$")
    builds = sorted(
        (int(m.group(1)), d)
        for d in (root / "versions").iterdir()
        if (m := pattern.match(d.name)) and (d / "bin" / f"python{version}").is_file()
    )
    for _, build in reversed(builds):
        found = probe([str(build / "bin" / f"python{version}")])
        if found and found[0] == version:
            return Interpreter(version, found[2], found[1], f"pyenv {build.name}")
    return None


def chroot_root() -> Path:
    """Where tools/sid_chroot.sh keeps the chroot."""
    return Path(os.environ.get("RUNTIME_OBSERVER_CHROOT", "/var/cache/runtime-observer/sid"))


def from_chroot(version: str, log: Log) -> Interpreter:
    """``python3.X`` inside the Debian sid chroot, building the chroot the first time."""
    if version not in CHROOT_VERSIONS:
        raise Unavailable(f"python{version}: not on PATH, not in pyenv")
    if stream([str(CHROOT_SCRIPT), "build"], log) != 0:
        said = [
            line
            for line in log.path.read_text(errors="replace").splitlines()
            if line.startswith("sid chroot:")
        ]
        raise Unavailable(said[-1] if said else "sid chroot: build failed")
    prefix = [str(CHROOT_SCRIPT), "run", "--"]
    found = probe([*prefix, f"python{version}"])
    if not found or found[0] != version:
        raise Unavailable(f"sid chroot: python{version} does not run in {chroot_root()}")
    return Interpreter(
        version,
        found[2],
        found[1],
        "sid chroot",
        prefix=prefix,
        root=chroot_root(),
        src=CHROOT_SRC,
        venv=f"/venvs/{version}",
    )


def find(version: str, log: Log) -> Interpreter:
    """The interpreter for ``version``: PATH, then pyenv, then the chroot."""
    found = from_path(version) or from_pyenv(version)
    if found is None:
        found = from_chroot(version, log)
    else:
        found.venv = str(CHECKOUT / f".venv-{version}")
    return found


class Log:
    """Everything about one version goes to its log file; ``show`` also echoes it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", encoding="utf-8", errors="replace")
        self.path = path

    def write(self, text: str, show: bool = False) -> None:
        """Append ``text`` to the log (and to stdout if ``show``)."""
        self.file.write(text)
        self.file.flush()
        if show:
            sys.stdout.write(text)
            sys.stdout.flush()

    def close(self) -> None:
        """Close the log file."""
        self.file.close()


def stream(command: Sequence[str], log: Log, env: dict[str, str] | None = None) -> int:
    """Run ``command``, its output shown live and logged; its exit status.

    The command gets its own process group: Ctrl-C is passed on to it as SIGINT (so
    pytest prints what failed so far), a second Ctrl-C kills it, and whatever it leaves
    running when it exits (a test's stray agent) is killed before the next version.
    Re-raises KeyboardInterrupt after the command has ended if it was interrupted.
    """
    log.write(f"$ {shlex.join(command)}\n", show=True)
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=CHECKOUT,
        env=env,
        start_new_session=True,
    )
    out = proc.stdout
    assert out is not None

    def pump() -> None:
        while chunk := out.read1(65536):
            log.write(chunk.decode("utf-8", errors="replace"), show=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    interrupts = 0
    while True:
        try:
            status = proc.wait()
            break
        except KeyboardInterrupt:
            interrupts += 1
            signal_group(proc.pid, signal.SIGINT if interrupts == 1 else signal.SIGKILL)
    signal_group(proc.pid, signal.SIGKILL)  # leftovers only: the leader has exited
    reader.join(timeout=10)  # a leftover in another group may still hold the pipe
    if interrupts:
        raise KeyboardInterrupt
    return status


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def quiet(command: Sequence[str], log: Log) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with its output only in the log."""
    log.write(f"$ {shlex.join(command)}\n")
    out = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=CHECKOUT
    )
    log.write(out.stdout)
    return out


def dev_requirements() -> list[str]:
    """The project's dependencies plus its ``[dev]`` extra, from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 host
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as exc:
            raise SystemExit(
                "tools/matrix.py: reading pyproject.toml needs Python >= 3.11 or tomli"
            ) from exc
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    return [*project.get("dependencies", []), *project["optional-dependencies"]["dev"]]


def prepare(interp: Interpreter, log: Log) -> str:
    """Make or refresh the version's venv; the venv's python as commands see it."""
    python = f"{interp.venv}/bin/python"
    digest = hashlib.sha256((CHECKOUT / "pyproject.toml").read_bytes()).hexdigest()
    stamp_text = f"{digest} {interp.executable} {interp.src}\n"
    stamp = interp.host_path(f"{interp.venv}/{STAMP_NAME}")
    fresh = stamp.is_file() and stamp.read_text() == stamp_text
    # lexists: in the chroot bin/python links to /usr/bin/python3.X, absent on the host
    if fresh and os.path.lexists(interp.host_path(python)):
        log.write(f"{interp.venv}: up to date\n", show=True)
        return python
    log.write(f"{interp.venv}: installing dependencies (new, or pyproject.toml changed)\n", True)
    # From scratch: the interpreter may have changed, and a dependency dropped from
    # pyproject.toml must not linger. pip's cache makes this cheap.
    venv_dir = interp.host_path(interp.venv)
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    made = quiet([*interp.prefix, interp.executable, "-m", "venv", interp.venv], log)
    if made.returncode != 0:
        raise Unavailable(f"could not create {interp.venv} (see {log.path})")
    steps = [
        [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [python, "-m", "pip", "install", "--quiet", *dev_requirements()],
    ]
    for step in steps:
        if quiet([*interp.prefix, *step], log).returncode != 0:
            raise Unavailable(f"pip install failed in {interp.venv} (see {log.path})")
    where = quiet(
        [*interp.prefix, python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        log,
    )
    if where.returncode != 0:
        raise Unavailable(f"{interp.venv}: cannot find site-packages (see {log.path})")
    site = where.stdout.strip().splitlines()[-1]
    # The checkout on sys.path instead of `pip install -e`: nothing written into it.
    interp.host_path(f"{site}/{PTH_NAME}").write_text(interp.src + "\n")
    stamp.write_text(stamp_text)
    return python


def junit_counts(path: Path, result: Result) -> bool:
    """Fill ``result``'s counts and failing test names from a JUnit XML report."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return False
    suites = [tree.getroot()] if tree.getroot().tag == "testsuite" else tree.getroot()
    total = failed = skipped = 0
    for suite in suites:
        total += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                module = case.get("classname", "")
                result.failures.append(f"{module.replace('.', '/')}.py::{case.get('name')}")
    result.passed, result.failed, result.skipped = total - failed - skipped, failed, skipped
    return True


SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?)\b")


def summary_counts(log_path: Path, result: Result) -> None:
    """Fallback when there is no report: the counts in pytest's last summary line."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "===" in line]
    for line in reversed(lines):
        counts = {kind: int(n) for n, kind in SUMMARY.findall(line)}
        if counts:
            result.passed = counts.get("passed", 0)
            result.failed = counts.get("failed", 0) + counts.get("error", 0)
            result.failed += counts.get("errors", 0)
            result.skipped = counts.get("skipped", 0)
            return


def run_version(version: str, pytest_args: list[str]) -> Result:
    """Find, prepare and test one version; never raises except on Ctrl-C."""
    result = Result(version)
    log = Log(LOG_DIR / f"{version}.log")
    report = LOG_DIR / f"{version}.xml"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    print(f"\n===== Python {version} =====", flush=True)
    try:
        interp = find(version, log)
        result.interpreter = interp.describe()
        print(f"interpreter: {result.interpreter}", flush=True)
        python = prepare(interp, log)
    except Unavailable as exc:
        result.status, result.note = "unavailable", str(exc)
        result.setup_s = time.monotonic() - started
        log.write(f"{exc}\n", show=True)
        log.close()
        return result
    result.setup_s = time.monotonic() - started
    env_vars = {"QT_QPA_PLATFORM": "offscreen"}
    if interp.prefix:  # keep root-owned bytecode out of the shared checkout
        env_vars["PYTHONPYCACHEPREFIX"] = f"/var/cache/pycache/{version}"
    command = [
        *interp.prefix,
        "env",
        *(f"{k}={v}" for k, v in env_vars.items()),
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",  # versions would overwrite each other's .pytest_cache
        f"--junitxml={interp.src}/{report.relative_to(CHECKOUT)}",
        *pytest_args,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    tests_started = time.monotonic()
    try:
        status = stream(command, log, env=env)
    except KeyboardInterrupt:
        result.status, result.note = "interrupted", "Ctrl-C"
        result.tests_s = time.monotonic() - tests_started
        log.close()
        raise Interrupted(result) from None
    result.tests_s = time.monotonic() - tests_started
    log.close()
    if not junit_counts(report, result):
        summary_counts(log.path, result)
    if status == 0:
        result.status = "passed"
    elif status == 1:
        result.status = "failed"
    else:
        result.status = "error"
        result.note = f"pytest exited {status}"
    return result


class Interrupted(Exception):
    """Ctrl-C during a version's tests; carries that version's partial result."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.version)
        self.result = result


def table(results: list[Result]) -> str:
    """The results as a Markdown table, ready to paste."""
    rows = [
        "| Python | interpreter | result | passed | failed | skipped | setup s | tests s |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        rows.append(
            f"| {r.version} | {r.interpreter} | {r.status} | {r.passed} | {r.failed} "
            f"| {r.skipped} | {r.setup_s:.0f} | {r.tests_s:.0f} |"
        )
    total = sum(r.setup_s + r.tests_s for r in results)
    rows.append(f"\nTotal wall time: {total:.0f} s")
    for r in results:
        if r.note:
            rows.append(f"- {r.version}: {r.note}")
        for name in r.failures:
            rows.append(f"- {r.version} failed: {name}")
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; environment variables give the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--versions",
        default=os.environ.get("MATRIX_VERSIONS") or os.environ.get("VERSIONS") or "",
        help="space- or comma-separated, e.g. '3.12 3.14' (default: all of "
        + " ".join(ALL_VERSIONS)
        + ")",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        default=os.environ.get("MATRIX_ALLOW_MISSING", "") not in ("", "0"),
        help="a version with no interpreter does not fail the run (MATRIX_ALLOW_MISSING=1)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    args.versions = args.versions.replace(",", " ").split() or list(ALL_VERSIONS)
    for version in args.versions:
        if not re.fullmatch(r"3\.\d+", version):
            parser.error(f"not a Python version: {version!r}")
    args.pytest_args = shlex.split(os.environ.get("MATRIX_PYTEST_ARGS", "")) + args.pytest_args
    return args


def main(argv: list[str]) -> int:
    """Run the matrix; 0 only if every selected version ran and passed."""
    args = parse_args(argv)
    results: list[Result] = []
    code = 0
    try:
        for version in args.versions:
            results.append(run_version(version, args.pytest_args))
    except Interrupted as stop:
        results.append(stop.result)
        code = 130
    except KeyboardInterrupt:
        code = 130
    text = table(results)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / "summary.md").write_text(text + "\n")
    print(f"\n===== test matrix (logs in {LOG_DIR.relative_to(CHECKOUT)}/) =====")
    print(text)
    if code:
        return code
    bad = [
        r
        for r in results
        if r.status != "passed" and not (r.status == "unavailable" and args.allow_missing)
    ]
    if bad:
        print("FAILED: " + ", ".join(f"{r.version} ({r.status})" for r in bad))
        return 1
    print("OK: " + ", ".join(f"{r.version} ({r.status})" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
