"""Command-line interface: a thin shell over the library.

Every command reports bad input as one line on stderr and exits with status 2 (1 for an unexpected internal
error, 130 when interrupted, 143 when terminated); set ``LAYERMOD_DEBUG=1`` to see tracebacks. SIGTERM is
turned into an exception while a command runs, so that, as on Ctrl-C, its temporary files are deleted and its
run directory is left as it was.

One module per command group parses, calls the library and prints: :mod:`~layermod.cli.measure` (layers,
curve, attack, compare), :mod:`~layermod.cli.report` (report, models, demo), :mod:`~layermod.cli.prune` and
:mod:`~layermod.cli.train` (train, eval), :mod:`~layermod.cli.sweep` (sweep, dynamics);
:mod:`~layermod.cli.args` holds the argument groups they share.
Neither importing this package nor building the parser imports torch: ``--help``, ``--version`` and argument
errors answer at once (an argument error is one line, ``layermod COMMAND: error: ...``, status 2), and torch is
loaded by the command that runs, inside :func:`main`, so a Ctrl-C while it loads is the command's own one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from layermod.cli import measure, prune, report, sweep, train
from layermod.cli.flags import flag_words
from layermod.errors import LayermodError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``PROG: error: MESSAGE`` (status 2), without the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``layermod`` parser with every command; each command's ``func`` takes the parsed arguments."""
    parser = _Parser(prog="layermod", description="Layer-by-layer graph modularity of a network's features: where "
                     "classes separate, and which layers are redundant.")
    parser.add_argument("--version", action="version", version=f"layermod {importlib.metadata.version('layermod')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    measure.add_parsers(commands)
    report.add_parsers(commands)
    prune.add_parsers(commands)
    train.add_parsers(commands)
    sweep.add_parsers(commands)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised where the command is, so that its ``finally`` blocks run (as for KeyboardInterrupt)."""


def _terminate(signum, frame) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`_Terminated` inside the block (main thread only: handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``layermod`` command; returns the exit status."""
    try:
        with _sigterm_raises():
            args = build_parser().parse_args(argv)
            return args.func(args)
    except _Terminated:
        print("layermod: terminated", file=sys.stderr)
        return 143
    except LayermodError as err:
        print(f"layermod: error: {flag_words(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layermod: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug, not bad input: one line unless asked for more
        if os.environ.get("LAYERMOD_DEBUG"):
            traceback.print_exc()
        print(f"layermod: internal error: {type(err).__name__}: {err} (set LAYERMOD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
