"""Log lines that a peer cannot forge: control and other non-printable characters escaped.

A peer chooses task ids, exception names, chaos run ids and more, and the agent writes
them into the host's log. A newline (or a carriage return, or a bidi override) in such
text could fake a whole line (``audit: ... role=operator ... result=ok``), so every
record on the agent's loggers is rendered once and its non-printable characters escaped.
"""

from __future__ import annotations

import logging

AGENT_LOGGERS = ("agent", "agent.audit", "agent.rpyc")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every non-printable character (str.isprintable) as an escape."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char in _NAMED:
            out.append(_NAMED[char])
        else:
            code = ord(char)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
            )
    return "".join(out)


def field(text: str) -> str:
    """One ``key=value`` value that cannot pose as more fields: quoted (JSON-style) when it
    is empty or holds a space, ``=``, a quote, a backslash or anything non-printable."""
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + printable(escaped) + '"'


class EscapingFilter(logging.Filter):
    """Render each record's message once, escaped; the traceback (exc_info) is left as is."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the handler to report
            return True
        record.msg, record.args = printable(message), None
        return True


_FILTER = EscapingFilter()


def install() -> None:
    """Attach the filter to the agent's loggers (idempotent; a logger's filters are not
    inherited by its children, so each is named)."""
    for name in AGENT_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
