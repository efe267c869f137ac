"""
Exceptions raised by txrouter, each carrying a message meant for the user.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppLoadError", "ConfigError", "ListenError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """
    One thing wrong with a routes file.

    @ivar file: the routes file, as the user named it.
    @ivar line: 1-based line number, or 0 when the problem has no line.
    @ivar where: the path of the offending value inside the file, such as
        C{routes['/blog/'].workers}; empty for the file as a whole.
    @ivar message: what is wrong and what was expected.
    """

    file: str
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line else self.file
        if self.where:
            return f"{location}: {self.where}: {self.message}"
        return f"{location}: {self.message}"


class ConfigError(Exception):
    """
    A routes file was refused; C{problems} lists everything found wrong.
    """

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class AppLoadError(Exception):
    """
    An application named by a route could not be loaded.

    The message says which route, what was being loaded and why it failed;
    when the application's own code raised, it includes that traceback.
    """


class ListenError(Exception):
    """
    A C{listen} endpoint could not be bound. Kept short: a daemonizing
    C{twistd} passes only the first 100 bytes of it to the terminal.
    """
