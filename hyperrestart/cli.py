"""`hyperrestart` command line: each verb lives in hyperrestart/commands/<module>.py and registers itself."""
import argparse
import codecs
import importlib
import os
import sys

from hyperrestart.core.errors import HyperrestartError

# Modules under hyperrestart.commands; each defines register(subparsers) adding its verbs with func=callable(args)->int.
COMMAND_MODULES = ["vendor", "env", "run", "plot_lr", "prepare_p3", "p3", "sweep", "tune", "report", "analyse"]


def build_parser(prog="hyperrestart", modules=COMMAND_MODULES):
    parser = argparse.ArgumentParser(
        prog=prog, description="Reproduce 'Enhancing Language Model Hypernetworks with Restart' on patched "
                               "allenai/hyperdecoders and rabeehk/hyperformer trees. `bootstrap.py` with no verb "
                               "materialises them; `VERB --help` for each verb.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(f"hyperrestart.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hyperrestart.commands.{name}":
                continue  # verb not built yet
            raise
        module.register(subparsers)
    return parser


def console_streams():
    """Printing never fails on the locale: under an ASCII (C/POSIX) locale the console gets UTF-8, the encoding of
    every file the tool writes; under another non-UTF-8 one, what it cannot encode is escaped."""
    for stream in (sys.stdout, sys.stderr):
        try:
            codec = codecs.lookup(stream.encoding).name
        except (AttributeError, LookupError, TypeError):
            continue
        if codec != "utf-8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(**({"encoding": "utf-8"} if codec == "ascii" else {"errors": "backslashreplace"}))


def main(argv=None, prog="hyperrestart", modules=COMMAND_MODULES):
    console_streams()
    parser = build_parser(prog, modules)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no verb: asking what there is, not an error
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except HyperrestartError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def console_main(argv=None, prog="hyperrestart", modules=COMMAND_MODULES):
    """Entry point of the `hyperrestart` script and bootstrap.py (which passes its own `modules`): main() plus quiet
    exit when piped into `head`."""
    try:
        return main(argv, prog, modules)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(console_main())
