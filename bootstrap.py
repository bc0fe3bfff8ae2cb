#!/usr/bin/env python3
"""Materialise the pinned upstreams with hyperrestart's patches and overlay: `python bootstrap.py [VERB] --help`.

With no verb it materialises (fetch, patch, overlay, verify) into ./upstream; verbs: check, status, drift, pack,
export, lock, env. Every other verb (run, sweep, report, ...) belongs to `hyperrestart`. See README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hyperrestart.cli import console_main  # noqa: E402
from hyperrestart.commands.vendor import BOOTSTRAP_MODULES, VERBS  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    known = set(VERBS) | {"materialize", "env"}
    if argv and argv[0] not in known and not argv[0].startswith("-"):
        print(f"bootstrap.py: error: {argv[0]!r} is not a bootstrap verb (bootstrap.py runs: "
              f"{', '.join([*VERBS, 'env'])}); other verbs are run as `hyperrestart {argv[0]}` "
              f"(or `python -m hyperrestart.cli {argv[0]}`)", file=sys.stderr)
        sys.exit(2)
    if not argv or argv[0] not in known | {"-h", "--help"}:
        argv = ["materialise", *argv]
    sys.exit(console_main(argv, prog="bootstrap.py", modules=BOOTSTRAP_MODULES))
