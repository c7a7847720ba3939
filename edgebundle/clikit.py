"""What both command-line front ends share: error reporting, exit codes, JSON output, verb loading.

Exit codes (docs/EXIT_CODES.md): 0 ok, 1 error, 2 usage, 3 changes pending, 4 verification failed.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import importlib
import json
import os
import pkgutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click

from edgebundle.errors import EdgebundleError, UsageError

#: The error :func:`handle_errors` last turned into an exit code, so a wrapper around a verb (the
#: installer's audit log) can record what went wrong, not only the exit status.
last_error: contextvars.ContextVar[EdgebundleError | None] = contextvars.ContextVar(
    "edgebundle_last_error", default=None)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


class Interrupted(EdgebundleError):
    """Ctrl-C (or SIGINT): the verb stopped where it was; every verb resumes when run again."""

    exit_code = 130


#: Verbs that only read: an interrupted run changed nothing, so there is nothing to resume.
READ_ONLY_VERBS = frozenset({"verify", "inspect", "lint", "status", "history", "audit"})


def _interrupted() -> Interrupted:
    ctx = click.get_current_context(silent=True)
    verb = ctx.info_name if ctx is not None else None
    if verb in READ_ONLY_VERBS:
        return Interrupted("interrupted; nothing was changed")
    return Interrupted("interrupted; run the same command again to resume")


def _report(e: EdgebundleError, as_json: bool) -> None:
    last_error.set(e)
    if as_json:
        emit_json({"ok": False, "error": e.message, "kind": type(e).__name__,
                   "hint": e.hint, "exitCode": e.exit_code})
    else:
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"  what to do: {e.hint}", err=True)
    sys.exit(e.exit_code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`EdgebundleError`, a full disk and Ctrl-C into a clear message and its exit code
    (no traceback; with ``--json`` an error document on stdout)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgebundle.diskspace import disk_full_error, is_disk_full

        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except EdgebundleError as e:
            _report(e, as_json)
        except OSError as e:
            if not is_disk_full(e):
                raise
            _report(disk_full_error(e), as_json)
        except (KeyboardInterrupt, click.exceptions.Abort):
            if not as_json:
                click.echo("", err=True)  # end a progress line
            _report(_interrupted(), as_json)

    return wrapper


class BundleLocation(click.ParamType):
    """A bundle argument: an existing path (tar, directory, media, parts) or ``oci://HOST/REPO:TAG``."""

    name = "BUNDLE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, str) and value.startswith("oci://"):
            return value
        return click.Path(exists=True, path_type=Path).convert(value, param, ctx)  # type: ignore[no-any-return]


#: Top-level packages of edgebundle itself (a missing one of these is a bug, not a missing extra).
OWN_PACKAGES = frozenset({"edgebundle", "bundler", "installer"})


def _unavailable(verb: str, missing: str) -> click.Command:
    """A verb whose module needs a Python package this install lacks (an optional extra): it says
    so, exit 2, instead of an ImportError traceback, and the other verbs stay usable."""

    @handle_errors
    def run(args: tuple[str, ...]) -> None:
        raise UsageError(f"'{verb}' needs the Python package '{missing}', which is not installed",
                         hint="install edgebundle with the builder's extras on a build host: "
                              "pip install 'edgebundle[build]' (Helm charts also need 'edgebundle[helm]')")

    return click.Command(verb, callback=run, help=f"(unavailable here: needs '{missing}')",
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True, "help_option_names": []})


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
        try:
            cmd = getattr(importlib.import_module(f"{self._package.__name__}.{module_name}"), "command", None)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] in OWN_PACKAGES:
                raise  # our own code missing is a broken install, not an optional extra
            cmd = _unavailable(module_name.replace("_", "-"), (e.name or "?").split(".")[0])
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


def run_and_exit(command_line: Callable[[], Any]) -> NoReturn:
    """Run a click command line to its end, then leave without tearing the interpreter down.

    Tearing down the modules a verb imported (pydantic, cryptography, requests, ...) took
    0.06-0.1 s after every command, longer than many verbs take. Once the command line has
    returned, what it owes is done: every file it wrote was written under ``with`` or renamed
    into place. Here the exit hooks run (temporary directories, logging, the head start) and
    the output is flushed, as at a normal exit; only the teardown is skipped. While a thread
    that is not a daemon still runs, it leaves the normal way, which waits for the thread.
    Exceptions other than ``SystemExit`` propagate as usual.
    """
    try:
        command_line()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if any(t.is_alive() for t in others):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, or a closed stream: nothing to say
            pass
    os._exit(code or 0)
