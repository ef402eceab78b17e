"""The desktop observer (PyQt6 + pyqtgraph); all Qt code lives in this package.

This module itself imports nothing, so the CLI can read ``TABS`` without Qt installed.
"""

# --tab names, in window order
TABS = ("cluster", "system", "charts", "processes", "table", "memory", "stalls", "profile")
