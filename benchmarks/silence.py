"""The longest silence of a command: runs it, timestamps every line it shows (stdout and stderr together; a progress
bar's carriage-return redraws count as lines), and prints the gaps, longest first (target: none over 5 s).

    python benchmarks/silence.py [--show] [--env NAME=VALUE ...] -- COMMAND ...

The start of the command and its exit count as lines, so a silent start or end is measured too.
"""
import argparse
import os
import subprocess
import sys
import time


def timed_lines(command, env):
    """[(seconds since start, line)] of everything the command printed, then its exit status."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, bufsize=0)
    lines, pending = [(0.0, "<start>")], b""
    while True:
        chunk = process.stdout.read1(65536) if hasattr(process.stdout, "read1") else os.read(process.stdout.fileno(),
                                                                                              65536)
        if not chunk:
            break
        now = time.monotonic() - start
        pending += chunk
        *complete, pending = pending.replace(b"\r", b"\n").split(b"\n")
        lines += [(now, line.decode("utf-8", "replace")) for line in complete if line.strip()]
    code = process.wait()
    if pending.strip():
        lines.append((time.monotonic() - start, pending.decode("utf-8", "replace")))
    lines.append((time.monotonic() - start, f"<exit {code}>"))
    return lines, code


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", action="store_true", help="print every line with its time")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    env = dict(os.environ, PYTHONUNBUFFERED="1", **dict(item.split("=", 1) for item in args.env))
    lines, code = timed_lines(command, env)
    if args.show:
        for seconds, line in lines:
            print(f"{seconds:7.2f}  {line[:150]}")
    gaps = sorted(((lines[i + 1][0] - lines[i][0], i) for i in range(len(lines) - 1)), reverse=True)
    print(f"command: {' '.join(command)}\nexit status {code}, {lines[-1][0]:.1f} s, {len(lines) - 2} lines shown")
    for gap, i in gaps[:3]:
        print(f"silent {gap:5.2f} s after {lines[i][0]:6.2f} s: {lines[i][1][:90]!r} -> {lines[i + 1][1][:60]!r}")
    print(f"longest silence: {gaps[0][0]:.2f} s (target: at most 5 s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
