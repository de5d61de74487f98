"""The ``mirrorhall`` command line: ``main`` parses one command's typed config and runs it.

Each command's parser is generated from its config dataclass (``mirrorhall.commands``).

Exit codes and what the user sees:

- 0: done.
- 2: a user error: an unusable option (``mirrorhall: error: ...; see 'mirrorhall COMMAND
  --help'``), or a config, dataset, checkpoint or output path that cannot be used
  (``mirrorhall.errors.UserError``, or an ``OSError`` from an unusable path). One line.
- 1: an internal error (anything else, such as a ``ValueError`` from deep inside numpy): its
  traceback, then one line asking for a report.
- 130: interrupted.

Something used but perhaps not as meant (``mirrorhall.errors.InputWarning``: a prompt word the
model does not know, too few episodes to hold any out) is one line ``mirrorhall: warning: ...``
and the command goes on. Progress bars are closed before any error line
(``mirrorhall.commands.console``).
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import traceback
import warnings

from mirrorhall import __version__
from mirrorhall.commands import COMMANDS
from mirrorhall.errors import InputWarning, UserError

_LINE_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}

INTERNAL_ERROR_HINT = ("mirrorhall: internal error: this is a bug in mirrorhall, not a problem with "
                       "your input; please report it with the command line and the traceback above")


def one_line(text: str) -> str:
    """``text`` with every character that would start a new line shown escaped."""
    return text.translate(str.maketrans(_LINE_BREAKS))


class ArgumentsError(UserError):
    """The command line does not parse; ``prog`` is the (sub)command whose help to point at."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class _HelpFormatter(argparse.HelpFormatter):
    def _split_lines(self, text, width):
        # never break a flag such as --no-progress at its hyphens
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and options added on first use (``fill``)."""

    def __init__(self, *args, fill=None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._fill = fill

    def _ready(self) -> None:
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        self._ready()
        return super().format_help()

    def format_usage(self):
        self._ready()
        return super().format_usage()

    def error(self, message):
        # "argument --agents: --agents must be ..." -> "--agents must be ..."
        message = re.sub(r"^argument (--[\w-]+): (?=\1 )", "", message)
        # argparse quotes some arguments raw ("unrecognized arguments: ..."): keep its error one line
        raise ArgumentsError(one_line(message), self.prog)


def _filler(name: str):
    def fill(parser: argparse.ArgumentParser) -> None:
        from mirrorhall.commands.options import add_options

        config, _, options = COMMANDS[name].load()
        add_options(parser, config, options)

    return fill


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mirrorhall",
        description="A multi-agent theory-of-mind laboratory: run scenes, generate labelled data, "
                    "train the shared multi-policy model, probe it against a Bayes-optimal observer.",
        epilog="Exit codes: 0 done; 2 a user error (one line); 1 an internal error (a traceback); "
               "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"mirrorhall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary, description=command.description or command.summary,
                       fill=_filler(name))
    return parser


def run_command(name: str, args: argparse.Namespace) -> int:
    """Build the command's config from parsed ``args`` (validated once) and run it."""
    from mirrorhall.commands.options import build

    config, function, _ = COMMANDS[name].load()
    return int(function(build(config, args)) or 0)


def _help_hint(err: ArgumentsError, argv: list[str]) -> str:
    prog = err.prog
    if prog == "mirrorhall":  # argparse reports unknown arguments on the top parser
        command = next((a for a in argv if a in COMMANDS), None)
        prog = f"mirrorhall {command}" if command else prog
    return f"see '{prog} --help'"


def main(argv=None) -> int:
    with warnings.catch_warnings():
        plain = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            # mirrorhall's own warnings in one line; any other keeps Python's format
            if issubclass(category, InputWarning):
                print(f"mirrorhall: warning: {one_line(str(message))}", file=sys.stderr)
            else:
                plain(message, category, filename, lineno, file, line)

        warnings.simplefilter("default", InputWarning)
        warnings.showwarning = show
        return _main(argv)


def _main(argv) -> int:
    from mirrorhall.commands.console import close_bars

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        return run_command(args.command, args)
    except ArgumentsError as err:
        close_bars()
        print(f"mirrorhall: error: {err}; {_help_hint(err, argv)}", file=sys.stderr)
        return 2
    except (UserError, OSError) as err:  # OSError: unusable paths (missing, too long, read-only, ...)
        msg = one_line(str(err).splitlines()[0] if str(err).strip() else type(err).__name__)
        close_bars()
        print(f"mirrorhall: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_bars()
        print("mirrorhall: interrupted", file=sys.stderr)
        return 130
    except Exception:
        close_bars()
        traceback.print_exc()
        print(INTERNAL_ERROR_HINT, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
