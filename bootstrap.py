#!/usr/bin/env python3
"""Materialise the pinned upstreams with hyperrestart's patches and overlay: `python bootstrap.py [VERB] --help`.

With no verb it materialises (fetch, patch, overlay, verify) into ./upstream; verbs: check, status, drift, pack,
export, lock, env. See README.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hyperrestart.cli import console_main  # noqa: E402
from hyperrestart.commands.vendor import VERBS  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    known = set(VERBS) | {"materialize", "env"}
    if not argv or (argv[0] not in known and argv[0] not in ("-h", "--help")):
        argv = ["materialise", *argv]
    sys.exit(console_main(argv, prog="bootstrap.py"))
