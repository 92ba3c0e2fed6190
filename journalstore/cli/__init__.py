"""The `journalstore` command: containers-storage's image commands, plus the journal's own.

Every command is one entry of `COMMANDS`, made by the `@command` decorator: its name, summary,
example, arguments, handler and how it opens the store. Adding a command (log, replay, verify,
repair) is one decorated function. Exit codes: 0 success, 1 a store error (one line on stderr),
2 a usage error. `--debug` adds the Python traceback to an error.

Environment: JOURNALSTORE_ROOT (default store), JOURNALSTORE_FSYNC=never (no fsync: for
throwaway stores and tests only; a crash may then lose acknowledged changes).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from ..errors import StoreError
from . import audit_commands, fleet_commands, image_commands, journal_commands  # noqa: F401  (they register the commands)
from .framework import (
    COMMANDS,
    ENVIRONMENT_HELP,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_HELP,
    EXIT_USAGE,
    GROUPS,
    PROG,
    Command,
    Progress,
    Session,
    command,
    default_root,
)

# ============================================================================ the parser


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options, accepted before the command and (as Go's -j/--json is) after it."""
    group = parser.add_argument_group("global options")

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group.add_argument(
        "--root",
        metavar="DIR",
        default=default(None),
        help="the store directory (default: $JOURNALSTORE_ROOT, else $XDG_DATA_HOME/journalstore, "
        "else ~/.local/share/journalstore)",
    )
    group.add_argument(
        "--read-only", action="store_true", default=default(False), help="never write, lock or repair anything"
    )
    group.add_argument("--actor", metavar="NAME", default=default(""), help="who makes the changes (in the journal)")
    group.add_argument(
        "--shared",
        choices=("auto", "on", "off"),
        default=default("auto"),
        help="publish every change for containers/storage (images.json, images.lock): on, off, or auto "
        "(on when the store is the images directory of a containers/storage root)",
    )
    group.add_argument(
        "-j", "--json", action="store_true", default=default(False), help="machine-readable output: one JSON document"
    )
    group.add_argument(
        "-D", "--debug", action="store_true", default=default(False), help="show tracebacks and debugging lines"
    )


def _command_list() -> str:
    lines: list[str] = []
    for group, title in GROUPS.items():
        lines.append(f"{title}:")
        for cmd in COMMANDS.values():
            if cmd.group == group:
                lines.append(f"  {cmd.name:<24}{cmd.summary}")
        lines.append("")
    return "\n".join(lines) + "\n"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps our hand-made epilogs (examples, command lists) as written."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a short 'unknown command' message instead of the list of every choice."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument COMMAND: invalid choice: '(.*?)' \(choose from", message)
        if match:
            close = difflib.get_close_matches(match.group(1), [*COMMANDS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; see '{PROG} --help'"
            message = f"unknown command {match.group(1)!r}{hint}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The parser for the whole tool, built from COMMANDS."""
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [global options] COMMAND [options] [args]",
        description="journalstore: the containers/storage image store, kept as an append-only journal.",
        epilog=_command_list()
        + "example:\n  journalstore --root /tmp/store create-image -n quay.io/podman/hello:latest\n\n"
        + f"Run '{PROG} COMMAND --help' for a command's options and an example.\n\n"
        + ENVIRONMENT_HELP,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog=PROG, help=argparse.SUPPRESS)
    for cmd in COMMANDS.values():
        description = cmd.summary + "." + (f"\n\n{cmd.description}" if cmd.description else "")
        p = sub.add_parser(
            cmd.name,
            aliases=list(cmd.aliases),
            description=description,
            epilog=f"example:\n  {cmd.example}\n\n{EXIT_HELP}",
            formatter_class=_Formatter,
        )
        if cmd.configure is not None:
            cmd.configure(p)
        _global_options(p, top=False)
        p.set_defaults(_command=cmd.name)
    return parser


# ============================================================================ main


@contextlib.contextmanager
def _warnings_to_stderr(debug: bool) -> Iterator[None]:
    """Library warnings as `journalstore: warning: ...` lines (with their origin under --debug)."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        where = f" ({category.__name__} at {filename}:{lineno})" if debug else ""
        sys.stderr.write(f"{PROG}: warning: {message}{where}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or exc.__class__.__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit status (0 success, 1 store error, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    name = getattr(args, "_command", None)
    if name is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{PROG}: error: a command is required (see '{PROG} --help')\n")
        return EXIT_USAGE
    session = Session(args, COMMANDS[name])
    with _warnings_to_stderr(session.debug):
        try:
            code = session.command.handler(session, args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except KeyboardInterrupt:
            sys.stderr.write(f"{PROG}: interrupted\n")
            return 130
        except (StoreError, ValueError, TypeError, OSError) as exc:
            if session.debug:
                traceback.print_exc()
            message = _describe_os_error(exc) if isinstance(exc, OSError) and not isinstance(exc, StoreError) else exc
            session.error(str(message))
            return EXIT_ERROR
        except Exception as exc:
            if session.debug:
                traceback.print_exc()
            session.error(
                f"internal error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback, and report it)"
            )
            return EXIT_ERROR
        finally:
            session.close()


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


__all__ = ["COMMANDS", "Command", "Progress", "build_parser", "command", "default_root", "main"]

