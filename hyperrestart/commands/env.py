"""`hyperrestart env NAME`: create the upstream's virtual environment (upstream/.venvs/NAME) from requirements/."""
from pathlib import Path

from hyperrestart.upstream.envs import UPSTREAM_NAMES, create_env
from hyperrestart.core.paths import DEFAULT_DEST, PROJECT_ROOT

# envs.venvs_root() without $HYPERRESTART_VENVS, as the help shows it
DEFAULT_VENVS = (DEFAULT_DEST / ".venvs").relative_to(PROJECT_ROOT)


def cmd_env(args):
    python = create_env(args.name, python=args.python, recreate=args.recreate,
                        root=Path(args.venvs) if args.venvs else None)
    print(f"{args.name}: {python}")
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "env", help="create an upstream's virtual environment from requirements/NAME.txt",
        description=f"Create {DEFAULT_VENVS}/NAME seeing the packages of the interpreter that creates it (a venv's "
                    "own included; its torch is reused, pip is constrained to it and never downloads one; the "
                    "env's own pins take precedence) and pip install -r requirements/NAME.txt (plus "
                    "requirements/NAME-nodeps.txt with --no-deps when it exists). Idempotent; --recreate rebuilds.")
    parser.add_argument("name", choices=UPSTREAM_NAMES, help="the upstream")
    parser.add_argument("--python", help="base interpreter (default: the one running hyperrestart); it must import "
                                         "torch, e.g. after `pip install torch==2.13.0`")
    parser.add_argument("--recreate", action="store_true", help="delete and rebuild an existing environment")
    parser.add_argument("--venvs", help=f"folder holding the envs (default: $HYPERRESTART_VENVS, else "
                                        f"{DEFAULT_VENVS} in the project)")
    parser.set_defaults(func=cmd_env)
