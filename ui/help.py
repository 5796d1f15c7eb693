"""Help ▸ Keyboard shortcuts (F1), generated from the window's own actions, and Help ▸ About with versions.

Generated, not written down: a shortcut changed in the code changes in the help, so the two cannot disagree.
Versions come from the installed packages' metadata (importlib.metadata), so About never imports coremltools or
torch (seconds each) just to print a number.
"""

from __future__ import annotations

import html
import platform
from importlib import metadata

from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox

# (what the About box calls it, the distributions that may provide it: the first one installed wins)
VERSIONED = (
    ("lipsync-compare", ("lipsync-compare",)),
    ("PySide6", ("PySide6-Essentials", "PySide6")),
    ("pyqtgraph", ("pyqtgraph",)),
    ("numpy", ("numpy",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("coremltools", ("coremltools",)),
    ("torch", ("torch",)),
)


def package_version(distributions: tuple[str, ...]) -> str | None:
    """The installed version of the first of these distributions, or None when none is installed."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> list[tuple[str, str]]:
    """(name, version or 'not installed') for the app, Python, Qt and the runtimes."""
    rows = [("Python", platform.python_version()), ("Qt", qVersion())]
    for label, distributions in VERSIONED:
        rows.append((label, package_version(distributions) or "not installed"))
    return rows


def shortcut_rows(actions: list[QAction]) -> list[tuple[str, str]]:
    """(keys, what they do) for every action with a shortcut, in the order the actions were made."""
    rows = []
    for action in actions:
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        if keys:
            what = action.toolTip() if action.toolTip() and action.toolTip() != action.text() else action.text()
            rows.append((keys, what.replace("&", "")))
    return rows


class HelpMixin:
    """The Help menu of MainWindow; relies on the window's ``_action`` and ``menuBar``."""

    def _build_help_menu(self) -> None:
        menu = self.menuBar().addMenu("&Help")
        self.shortcuts_action = self._action("&Keyboard shortcuts", self.show_shortcuts,
                                             QKeySequence.StandardKey.HelpContents)
        menu.addAction(self.shortcuts_action)
        menu.addAction(self._action("&About lipsync-compare", self.show_about))
        self.help_box: QMessageBox | None = None

    def shortcuts_html(self) -> str:
        rows = "".join(f"<tr><td><b>{html.escape(keys)}</b>&nbsp;&nbsp;</td><td>{html.escape(what)}</td></tr>"
                       for keys, what in shortcut_rows(self.actions()))
        return f"<table>{rows}</table>"

    def about_html(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(name)}&nbsp;&nbsp;</td><td>{html.escape(version)}</td></tr>"
                       for name, version in versions())
        return ("<p><b>lipsync-compare</b>: one lip-sync pipeline on several inference backends, side by side.</p>"
                f"<table>{rows}</table>")

    def show_shortcuts(self) -> None:
        self._show_help("Keyboard shortcuts", self.shortcuts_html())

    def show_about(self) -> None:
        self._show_help("About lipsync-compare", self.about_html())

    def _show_help(self, title: str, text: str) -> None:
        """Not modal: the help can stay open beside the window while its keys are tried."""
        if self.help_box is not None:
            self.help_box.close()
        box = QMessageBox(QMessageBox.Icon.NoIcon, title, text, QMessageBox.StandardButton.Close, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.finished.connect(lambda _: setattr(self, "help_box", None))
        self.help_box = box
        box.show()

