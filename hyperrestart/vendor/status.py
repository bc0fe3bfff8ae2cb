"""`status`: what is materialised where, against what vendor.lock says."""
from pathlib import Path

from hyperrestart.vendor import gitops
from hyperrestart.vendor.materialize import BACKUP_DIR, local_changes, outside_the_tree
from hyperrestart.vendor.state import DamagedStateError, read_state


def status(lock, names, dest: Path) -> int:
    """Print one block per upstream; exit 0 when every tree is materialised, current and unmodified, else 1."""
    dest = Path(dest).resolve()
    all_good = True
    for name in names:
        upstream = lock.upstream(name)
        tree = dest / name
        print(f"{name}: {tree}")
        try:
            state = read_state(tree) if tree.is_dir() else None
        except DamagedStateError as exc:
            print(f"  DAMAGED: {exc}")
            all_good = False
            continue
        if state is None:
            print("  not materialised (run `python bootstrap.py`)" if not tree.exists()
                  else "  not made by hyperrestart (no state file)")
            all_good = False
            continue
        stale = state.get("commit") != upstream.commit or \
            state.get("lock_result_tree") != upstream.result_tree.get(state.get("profile"))
        print(f"  commit   {state['commit']}" + ("  (vendor.lock pins " + upstream.commit + ")"
                                                 if state['commit'] != upstream.commit else ""))
        print(f"  profile  {state['profile']}")
        print(f"  patches  {len(state['patches'])} applied")
        for patch in state["patches"]:
            print(f"    {patch}")
        print(f"  overlay  {len(state['overlay'])} file(s)")
        try:
            _, changes = local_changes(tree, state)
            outside = outside_the_tree(tree, state)
        except gitops.GitError as exc:
            print(f"  DAMAGED: git cannot read {tree} ({(exc.stderr.splitlines() or [''])[-1]}); repair: "
                  f"`python bootstrap.py --force --dest {dest} --only {name}` moves it, whole, to {dest / BACKUP_DIR}/ "
                  f"and builds it again")
            all_good = False
            continue
        if changes:
            all_good = False
            print(f"  local modifications ({len(changes)}):")
            for change in changes:
                print(f"    {change}")
        else:
            print("  local modifications: none")
        if outside:
            print(f"  not in the tree ({len(outside)}; a rebuild refuses to lose them, --force moves the old tree to "
                  f"{dest / BACKUP_DIR}/):")
            for item in outside:
                print(f"    {item}")
        if stale:
            all_good = False
            print("  STALE: vendor.lock or the series changed; run `python bootstrap.py` to update")
    return 0 if all_good else 1
