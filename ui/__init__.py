"""The comparison window: PySide6 + pyqtgraph widgets on top of the Qt-free pipeline."""
