"""Can Qt open a window here? Answer in one clear sentence instead of a Qt plugin abort.

Qt aborts the whole process when its platform plugin cannot load, so the libraries are
checked first (naming the Debian/Ubuntu packages to install) and then a throwaway
subprocess tries to start Qt for real.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

# Libraries Qt's xcb platform plugin loads, and the package that ships each.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libdbus-1.so.3": "libdbus-1-3",
}
ALTERNATIVES = (
    "Without a window you can still save a picture of it "
    "(observer gui NODE --screenshot out.png) or use the CLI (observer ps NODE)."
)
PROBE = "from PyQt6.QtWidgets import QApplication; QApplication(['observer-probe'])"


def missing_libraries() -> list[str]:
    """xcb-plugin libraries that cannot be loaded (empty when all are there)."""
    missing = []
    for library in XCB_LIBRARIES:
        try:
            ctypes.CDLL(library)
        except OSError:
            missing.append(library)
    return missing


def window_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why a window cannot open here, with what to do about it; None when it can."""
    env = dict(os.environ if environ is None else environ)
    try:
        import PyQt6.QtWidgets  # noqa: F401
    except ImportError as exc:
        return (
            f"The desktop observer needs PyQt6, which cannot be imported ({exc}). "
            "Install it with: pip install 'runtime-observer[gui]'. " + ALTERNATIVES
        )
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform in ("offscreen", "minimal", "vnc"):
        return None
    if sys.platform.startswith("linux") and platform in ("", "xcb"):
        if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
            return "Cannot open a window: no display (DISPLAY is not set). " + ALTERNATIVES
        missing = missing_libraries() if platform == "xcb" or not env.get("WAYLAND_DISPLAY") else []
        if missing:
            packages = " ".join(dict.fromkeys(XCB_LIBRARIES[m] for m in missing))
            return (
                f"Cannot open a window: Qt's xcb plugin needs {', '.join(missing)}. "
                f"Install them with: sudo apt-get install {packages}. " + ALTERNATIVES
            )
    return _probe(env)


def _probe(env: dict[str, str]) -> str | None:
    """Start Qt in a subprocess: if it aborts there, say why here."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Cannot start Qt: {exc}. " + ALTERNATIVES
    if result.returncode == 0:
        return None
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "plugin" in ln.lower() or "display" in ln.lower()), "")
    reason = reason or (lines[-1] if lines else f"exit status {result.returncode}")
    return f"Cannot open a window: Qt failed to start ({reason}). " + ALTERNATIVES
