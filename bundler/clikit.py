"""What both command-line front ends share: error reporting, exit codes, JSON output, verb loading.

Exit codes (docs/EXIT_CODES.md): 0 ok, 1 error, 2 usage, 3 changes pending, 4 verification failed.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import click

from bundler.errors import EdgebundleError

#: The error :func:`handle_errors` last turned into an exit code, so a wrapper around a verb (the
#: installer's audit log) can record what went wrong, not only the exit status.
last_error: contextvars.ContextVar[EdgebundleError | None] = contextvars.ContextVar(
    "edgebundle_last_error", default=None)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`EdgebundleError` into a clear message and its exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgebundleError as e:
            last_error.set(e)
            if kwargs.get("as_json"):
                emit_json({"ok": False, "error": e.message, "kind": type(e).__name__,
                           "hint": e.hint, "exitCode": e.exit_code})
            else:
                click.echo(f"error: {e.message}", err=True)
                if e.hint:
                    click.echo(f"  what to do: {e.hint}", err=True)
            sys.exit(e.exit_code)

    return wrapper


class VerbGroup(click.Group):
    """A group whose verbs (one module each, see :func:`register_verbs`) are imported only when
    needed: running one verb imports that verb's module alone, since start-up time is part of
    every command's cost. Listing the verbs (``--help``, ``.commands``) imports them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._package: ModuleType | None = None
        self._wrap: Callable[[click.Command], None] | None = None
        self._commands: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        for name in self._modules():
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = dict(value)

    def _modules(self) -> list[str]:
        return sorted(m.name for m in pkgutil.iter_modules(self._package.__path__)) if self._package else []

    def _load(self, module_name: str) -> None:
        assert self._package is not None
        cmd = getattr(importlib.import_module(f"{self._package.__name__}.{module_name}"), "command", None)
        if isinstance(cmd, click.Command) and cmd.name and cmd.name not in self._commands:
            if self._wrap is not None:
                self._wrap(cmd)
            self._commands[cmd.name] = cmd

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = cmd_name.replace("-", "_")
        if cmd_name not in self._commands and module_name in self._modules():
            self._load(module_name)
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)


def register_verbs(group: click.Group, package: ModuleType,
                   wrap: Callable[[click.Command], None] | None = None) -> None:
    """Add the ``command`` of every module in ``package`` (one module per verb) to ``group``;
    a :class:`VerbGroup` imports each module when its verb is first used.

    ``wrap`` is called on each command before it is added, so a front end can hook every verb
    alike (the installer records each one in its audit log).
    """
    if isinstance(group, VerbGroup):
        group._package, group._wrap = package, wrap
        return
    for name in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        module = importlib.import_module(f"{package.__name__}.{name}")
        cmd = getattr(module, "command", None)
        if isinstance(cmd, click.Command):
            if wrap is not None:
                wrap(cmd)
            group.add_command(cmd)
