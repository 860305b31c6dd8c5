"""The `harness` command: one module per subcommand, each thin argument parsing over the library.

Each module in this package has HELP (one line), optionally DESCRIPTION, add_arguments(parser) and
run(args) -> exit code. Library code stays where it is; only parsing and printing live here.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

from harness.cli.common import Parser
from harness.errors import HarnessError
from harness.redact import RedactingFilter, redact

# The subcommands in the order `harness --help` lists them: name -> module in this package.
COMMANDS = ("run", "tasks", "models", "show", "score", "report", "leaderboard", "compare", "plot", "view", "bench",
            "serve", "export", "import")
_MODULES = {"import": "import_results"}  # `import` cannot be a module name


def command_module(name: str):
    """The module implementing `harness NAME`."""
    return importlib.import_module(f"harness.cli.{_MODULES.get(name, name)}")


def build_parser() -> Parser:
    """The parser of every subcommand."""
    parser = Parser(prog="harness", description="Evaluate and benchmark language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (loading, caching)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        module = command_module(name)
        # argparse %-formats the help of a subcommand (a literal % doubled) but not its description.
        module.add_arguments(sub.add_parser(name, help=module.HELP.replace("%", "%%"),
                                            description=getattr(module, "DESCRIPTION", module.HELP)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`harness show ... | head`): stop quietly, as other tools do, and
        # point stdout at /dev/null so that the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command a pipe stopped
    from harness import distributed

    distributed.finish(code)  # under torchrun: leave the process group together, then exit
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    command = args.command or "run"
    if args.command is None:  # `harness` alone (or with only -v) runs the default suite
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "run"])
    try:
        return command_module(command).run(args)
    except HarnessError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished batches are cached; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
