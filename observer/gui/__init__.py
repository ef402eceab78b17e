"""The desktop observer (PyQt6 + pyqtgraph); all Qt code lives in this package."""
