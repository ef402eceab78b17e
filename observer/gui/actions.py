"""Control actions offered on a row (cancel, raise, signal) and the words that confirm them.

Qt-free: the window builds menus and confirmation dialogs from these.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.schema import ControlResult
from observer.client import Node
from observer.gui.workers import in_process

VIEWER_REASON = (
    "Read-only: this node was connected with a viewer token. "
    "Connect with an operator token to cancel tasks, raise in threads or signal processes."
)


@dataclass(frozen=True)
class ControlAction:
    """One thing the user can do to a target of some kind."""

    kind: str  # task / thread / child
    label: str  # menu text
    verb: str  # cancel / raise / signal
    argument: str = ""  # exception name or signal name
    default: bool = False  # what Delete does

    def confirmation(self, target: str, name: str, node: str) -> tuple[str, str]:
        """Title and text of the dialog that states exactly what will happen, and where."""
        who = f"“{name}” ({target})" if name else target
        if self.verb == "cancel":
            return (
                "Cancel task",
                f"Cancel task {who} on node {node}?\n\n"
                "asyncio raises CancelledError inside the task at the await it is "
                "suspended in; its finally blocks still run. If a supervisor watches "
                "it, a replacement may start.",
            )
        if self.verb == "raise":
            return (
                f"Raise {self.argument} in thread",
                f"Raise {self.argument} in thread {who} on node {node}?\n\n"
                "It is raised when the thread next runs Python bytecode: a thread "
                "blocked in C code (sleep, I/O, a lock) sees it only when that call "
                "returns. Unhandled, it ends the thread.",
            )
        effect = (
            "The process ends at once, with no chance to clean up."
            if self.argument == "KILL"
            else "The process may catch it and shut down cleanly."
        )
        return (
            f"Send SIG{self.argument}",
            f"Send SIG{self.argument} to child process {who} on node {node}?\n\n{effect}",
        )

    def run(self, node: Node, target: str) -> ControlResult:
        """Perform the action (in the link's worker thread), in the process the target
        lives in: ``pid-N/task-M`` is a task of worker N, reached through the master."""
        node, target = in_process(node, target)
        if self.verb == "cancel":
            return node.cancel(target)
        if self.verb == "raise":
            return node.raise_in(target, self.argument)
        return node.signal(target, self.argument)


ACTIONS: tuple[ControlAction, ...] = (
    ControlAction("task", "Cancel task", "cancel", default=True),
    ControlAction("thread", "Raise SystemExit in thread", "raise", "SystemExit", default=True),
    ControlAction("thread", "Raise KeyboardInterrupt in thread", "raise", "KeyboardInterrupt"),
    ControlAction("child", "Send SIGTERM", "signal", "TERM", default=True),
    ControlAction("child", "Send SIGKILL", "signal", "KILL"),
)


def actions_for(kind: str) -> list[ControlAction]:
    """The actions a row of this kind offers (none for the process or a loop)."""
    return [a for a in ACTIONS if a.kind == kind]


def default_action(kind: str) -> ControlAction | None:
    """What Delete does on a row of this kind."""
    return next((a for a in ACTIONS if a.kind == kind and a.default), None)


def result_text(result: ControlResult, node: str) -> str:
    """One status-bar line for a control result."""
    outcome = "done" if result.ok else "failed"
    return f"{node}: {result.action} {result.target} {outcome}: {result.message}"
