"""Verbs that manage the vendored upstreams: materialise (default), check, status, drift, pack, export, lock."""
import time
from pathlib import Path

from hyperrestart.vendor import lockfile
from hyperrestart.core.errors import HyperrestartError
from hyperrestart.core.paths import DEFAULT_DEST, LOCK_FILE

VERBS = ("materialise", "check", "status", "drift", "pack", "export", "lock")
BOOTSTRAP_MODULES = ("vendor", "env")  # the command modules bootstrap.py offers: these verbs, plus `env`


def _load(args):
    return lockfile.load(getattr(args, "lock_file", None) or LOCK_FILE)


def _names(lock, args):
    names = getattr(args, "only", None) or list(lock.upstreams)
    for name in names:
        lock.upstream(name)
    return names


def _source_kwargs(args):
    from hyperrestart.vendor.bundle import unpack
    from hyperrestart.vendor.sources import parse_overrides
    bundles = unpack(args.from_pack) if getattr(args, "from_pack", None) else None
    return {"overrides": parse_overrides(args.source), "bundles": bundles,
            "offline": bool(args.offline or bundles)}


def cmd_materialise(args):
    from hyperrestart.vendor.materialize import materialise
    lock = _load(args)
    profile = lock.check_profile(args.profile or lock.default_profile)
    started = time.monotonic()
    materialise(lock, _names(lock, args), args.dest, profile, force=args.force, **_source_kwargs(args))
    print(f"done in {time.monotonic() - started:.2f}s")
    return 0


def cmd_check(args):
    from hyperrestart.vendor.verify import check
    lock = _load(args)
    profiles = [lock.check_profile(args.profile)] if args.profile else lock.profiles
    problems = check(lock, _names(lock, args), profiles, **_source_kwargs(args))
    if problems:
        raise HyperrestartError("check failed:\n  " + "\n  ".join(p.replace("\n", "\n  ") for p in problems))
    print("check passed: every profile of every upstream builds to the tree in vendor.lock")
    return 0


def cmd_status(args):
    from hyperrestart.vendor.status import status
    lock = _load(args)
    return status(lock, _names(lock, args), Path(args.dest))


def cmd_lock(args):
    from hyperrestart.vendor.verify import relock
    lock = _load(args)
    relock(lock, _names(lock, args), **_source_kwargs(args))
    return 0


def cmd_drift(args):
    from hyperrestart.vendor.drift import drift
    lock = _load(args)
    return drift(lock, _names(lock, args), args.ref, **_source_kwargs(args))


def cmd_pack(args):
    from hyperrestart.vendor.bundle import pack
    lock = _load(args)
    pack(lock, _names(lock, args), Path(args.file), **_source_kwargs(args))
    return 0


def cmd_export(args):
    from hyperrestart.vendor.export import export
    return export(_load(args), args.name, Path(args.dest), message=args.message)


def _common(parser, sources=True, dest=True, only=True):
    if only:
        parser.add_argument("--only", action="append", metavar="NAME",
                            help="act on this upstream only (repeatable; default: all in vendor.lock)")
    if dest:
        parser.add_argument("--dest", default=str(DEFAULT_DEST),
                            help="directory holding the materialised trees (default: %(default)s)")
    if sources:
        parser.add_argument("--source", action="append", metavar="NAME=URL|PATH",
                            help="fetch NAME from this URL, repository or bundle instead (repeatable)")
        parser.add_argument("--offline", action="store_true",
                            help="never use the network; fail fast unless the commits are cached or a mirror is given "
                                 "($HYPERRESTART_MIRROR, --source, --from)")
        parser.add_argument("--from", dest="from_pack", metavar="PACK",
                            help="take the upstreams from a pack written by `bootstrap.py pack` (implies --offline)")
    parser.add_argument("--lock-file", help=f"vendor lock to use (default: {LOCK_FILE.name} of the project)")


def register(subparsers):
    p = subparsers.add_parser("materialise", aliases=["materialize"],
                              help="fetch the pinned upstreams, apply the patch series and overlay, verify (default verb)")
    _common(p)
    p.add_argument("--profile", help="patch profile (default: vendor.lock's default_profile)")
    p.add_argument("--force", action="store_true",
                   help="replace a tree with local changes, after saving them as a patch file it names")
    p.set_defaults(func=cmd_materialise)

    p = subparsers.add_parser("check", help="prove that pristine upstream + series + overlay = vendor.lock's trees "
                                            "(scratch directories only; what CI runs)")
    _common(p, dest=False)
    p.add_argument("--profile", help="check one profile (default: all)")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("status", help="per upstream: commit, profile, applied patches, local modifications")
    _common(p, sources=False)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("drift", help="apply the series to another upstream ref (default: the remote's HEAD) "
                                            "and say per patch: applies / already upstream / conflicts")
    _common(p, dest=False)
    p.add_argument("--ref", help="branch, tag or commit of the upstream (default: the remote's HEAD)")
    p.set_defaults(func=cmd_drift)

    p = subparsers.add_parser("pack", help="write the pinned commits into one file (git bundles) for air-gapped use")
    _common(p, dest=False)
    p.add_argument("file", help="pack file to write, e.g. hyperrestart-upstreams.tar")
    p.set_defaults(func=cmd_pack)

    p = subparsers.add_parser("export", help="regenerate patches/NAME/ from the commits and edits in a materialised "
                                             "tree (stable format-patch flags), then refresh vendor.lock")
    p.add_argument("name", help="upstream name, e.g. hyperdecoders")
    p.add_argument("--dest", default=str(DEFAULT_DEST), help="directory holding the materialised trees")
    p.add_argument("-m", "--message", help="commit uncommitted edits first, as a new patch with this subject")
    p.add_argument("--lock-file", help=f"vendor lock to use (default: {LOCK_FILE.name} of the project)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("lock", help="recompute vendor.lock's hashes after a deliberate change to patches/overlay")
    _common(p, dest=False)
    p.set_defaults(func=cmd_lock)

