"""Twisted's own reactor conformance suites (ReactorBuilder) on twincore's
reactor: the measure of done for twincore.twisted (issue 19).

    PYTHONPATH=build/pymod /usr/bin/python3 tests/twisted/run_conformance.py
        [--reactor twincore|epoll] [--global] [--quick] [--timeout S]
        [--min-passes N] [-v]

Runs `python -m twisted.trial` on the modules below in a child process
with ReactorBuilder's reactor list set to one reactor (twincore's, or
EPollReactor for the baseline); --global also installs it as trial's own
reactor (trial --reactor=twincore). Prints one summary line and exits 1 on
any failure, error, unexpected success, a run over the time bound, or
fewer passes than --min-passes (default: 313, EPollReactor's count on the
full list; none with --quick)."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

MODULES = ["test_core", "test_time", "test_threads", "test_tcp", "test_unix",
           "test_udp", "test_fdset", "test_socket", "test_tls",
           "test_newtls", "test_process", "test_stdio"]
# A fast subset for scripts/dev.sh: the loop, timers, threads, descriptors.
QUICK = ["test_core", "test_time", "test_threads", "test_fdset", "test_udp",
         "test_socket"]
REACTORS = {"twincore": "twincore.twisted.TwincoreReactor",
            "epoll": "twisted.internet.epollreactor.EPollReactor"}

# Run in the child: the list must be set before trial imports the modules
# (makeTestCaseClasses runs at their import).
CHILD = """
import sys
from twisted.internet.test.reactormixins import ReactorBuilder
ReactorBuilder._reactors = [{factory!r}]
from twisted.scripts.trial import run
sys.argv = ["trial"] + sys.argv[1:]
run()
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reactor", choices=sorted(REACTORS), default="twincore")
    ap.add_argument("--global", dest="global_", action="store_true",
                    help="also trial's own reactor (--reactor=NAME)")
    ap.add_argument("--quick", action="store_true",
                    help="the subset " + " ".join(QUICK))
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds for the whole run (default 600)")
    ap.add_argument("--min-passes", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show trial's output")
    ap.add_argument("modules", nargs="*", help="override the module list")
    args = ap.parse_args()

    names = args.modules or (QUICK if args.quick else MODULES)
    mods = [m if "." in m else "twisted.internet.test." + m for m in names]
    min_passes = args.min_passes
    if min_passes is None:
        min_passes = 313 if not args.modules and not args.quick else 0
    cmd = [sys.executable, "-c", CHILD.format(factory=REACTORS[args.reactor])]
    if args.global_:
        cmd.append("--reactor=" + args.reactor)
    cmd += mods
    # trial writes _trial_temp/ into its working directory: a fresh one,
    # where a relative PYTHONPATH (build/pymod) would no longer lead to
    # twincore (every test would be skipped as unimportable).
    workdir = tempfile.mkdtemp(prefix="twincore-trial-")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(p) for p in
        env.get("PYTHONPATH", "").split(os.pathsep) if p)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=args.timeout,
                              cwd=workdir, env=env)
        out = proc.stdout.decode("utf-8", "replace")
        hung = False
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has killed the child (trial runs the tests in it).
        out = (exc.stdout or b"").decode("utf-8", "replace")
        hung = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - start
    if args.verbose or hung:
        sys.stdout.write(out)

    counts = {}
    m = re.search(r"^(PASSED|FAILED) \((.*)\)\s*$", out, re.M)
    if m:
        for part in m.group(2).split(","):
            key, _, value = part.strip().partition("=")
            counts[key] = int(value)
    ran = re.search(r"^Ran (\d+) tests", out, re.M)
    bad = sum(counts.get(k, 0) for k in
              ("failures", "errors", "unexpectedSuccesses"))
    passes = counts.get("successes", 0)
    verdict = "ok"
    if hung:
        verdict = f"HUNG (over {args.timeout:.0f} s)"
    elif not m or not ran:
        verdict = "NO RESULT"
    elif bad:
        verdict = "FAILED"
    elif passes < min_passes:
        verdict = f"TOO FEW PASSES (< {min_passes})"
    if verdict != "ok" and not args.verbose and not hung:
        # The failures' tracebacks: trial prints them after the list.
        tail = out.split("=" * 79, 1)
        sys.stdout.write(tail[1] if len(tail) > 1 else out)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"twisted conformance [{args.reactor}"
          f"{' global' if args.global_ else ''}"
          f"{' quick' if args.quick else ''}]: "
          f"ran {ran.group(1) if ran else '?'} ({summary}) in {took:.0f} s: "
          f"{verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
