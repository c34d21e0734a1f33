#!/usr/bin/python3
"""bench/run.py: one command that runs every twincore benchmark.

    /usr/bin/python3 bench/run.py --quick     # about 4 minutes
    /usr/bin/python3 bench/run.py --full      # longer windows, 5 repeats

Builds the C programs with meson if the build directory lacks them, starts
each peer's echo server pinned to one CPU, drives it with bench/loadgen
pinned to another, repeats every measurement and keeps the median, and
writes bench/results/latest.json, latest.md and PNG charts. Peers whose
server is missing are skipped with a printed note.

The work is split in sections (SECTIONS at the bottom): each runs, renders
its Markdown and draws its charts. A network peer is one line in PEERS. The
OffloadSection runs the programs of bench/offload listed in OFFLOAD_BENCHES
(tiny-task round trips through each peer's thread pool, SHA-256 scaling
with 1 and 2 workers, timer lateness while 2 workers hash), one line each.
The TLSSection runs TLS_PEERS (1 KiB TLS echo, a throw-away certificate
made at run time) and `openssl s_time` handshakes (HANDSHAKE_PEERS).
The goals the issues set are shown next to the figures (NETWORK_GOALS,
TINY_GOALS, SHA_GOALS, TIMER_GOAL_MS, TLS_GOAL).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
DEBIAN_PYTHON = "/usr/bin/python3"

# A window where the load generator used at least this share of its CPU is
# marked client-bound: the server may be faster than the figure says.
CLIENT_BOUND_SHARE = 0.95
# A window where other processes used more than this share of a CPU is
# noisy: it is retried while the mode's retry budget lasts, the quietest
# attempt is kept, and a figure whose runs stayed noisy is marked.
NOISY_SHARE = 0.10


@dataclasses.dataclass(frozen=True)
class Peer:
    """A network peer. command is split on spaces after {build}, {bench},
    {py} and {port} are filled in; every argument holding a '/' must then
    exist, or the peer is skipped. modules must import under {py}."""
    name: str
    command: str
    modules: tuple = ()
    env: tuple = ()             # (("NAME", "value with {build}"), ...)


# One line per peer; the first is drawn first. The reference for the
# network ratios is REFERENCE_PEER.
PEERS = [
    Peer("raw-epoll", "{build}/bench/servers/raw_epoll_echo {port}"),
    Peer("twincore-c", "{build}/examples/c/echo_server {port}"),
    Peer("twincore-py", "{py} {bench}/servers/twincore_echo.py {port}",
         ("twincore",), (("PYTHONPATH", "{build}/pymod"),)),
    Peer("libev", "{build}/bench/servers/libev_echo {port}"),
    Peer("uvloop", "{py} {bench}/servers/uvloop_echo.py {port}", ("uvloop",)),
    Peer("asyncio", "{py} {bench}/servers/asyncio_echo.py {port}"),
    Peer("twisted", "{py} {bench}/servers/twisted_echo.py {port}",
         ("twisted",)),
    Peer("twisted-twincore",
         "{py} {bench}/servers/twisted_twincore_echo.py {port}",
         ("twisted", "twincore"), (("PYTHONPATH", "{build}/pymod"),)),
    Peer("twisted-twincore-native",
         "{py} {bench}/servers/twisted_twincore_echo.py {port} --native",
         ("twisted", "twincore"), (("PYTHONPATH", "{build}/pymod"),)),
    Peer("gevent", "{py} {bench}/servers/gevent_echo.py {port}", ("gevent",)),
]
REFERENCE_PEER = "uvloop"
# Pairs also compared directly (per server-CPU-s, per-round medians) under
# each table.
COMPARISONS = [("twincore-py", "uvloop"), ("twincore-py", "raw-epoll"),
               ("twincore-c", "raw-epoll"), ("libev", "raw-epoll"),
               ("twincore-c", "libev"), ("twisted-twincore", "twisted"),
               ("twisted-twincore-native", "twisted")]
# The goals the issues set for some of those pairs, on the headline
# scenario (the first): issue #2, twincore-c at 0.95x raw-epoll or better;
# issue #5, twincore-py at 1.1x uvloop and 0.9x raw-epoll or better.
NETWORK_GOALS = {("twincore-c", "raw-epoll"): 0.95,
                 ("twincore-py", "uvloop"): 1.1,
                 ("twincore-py", "raw-epoll"): 0.9}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    connections: int
    pipeline: int = 1
    tls: bool = False           # loadgen --tls -k
    lines: bool = False         # loadgen --lines: '\n'-terminated text


SCENARIOS = [
    Scenario("64 B x 64 connections", 64, 64),      # the headline
    Scenario("4 KiB x 64 connections", 4096, 64),
    Scenario("64 B x 1 connection", 64, 1),
]


@dataclasses.dataclass(frozen=True)
class Mode:
    duration: float     # measured window of one run, seconds
    warmup: float       # load before the window, seconds
    repeats: int        # runs per measurement; the median is kept
    prime: float        # one throwaway run per server after it starts
    retry_budget: float  # seconds to spend waiting out other load
    # The offload section (its programs run `offload_repeats` times each,
    # issue 14's medians of 5; it has a retry budget of its own).
    tiny_duration: float    # tiny tasks: seconds of each of the 2 phases
    sha_duration: float     # SHA-256: seconds per worker count
    timer_duration: float   # timer: the window lasts at least this...
    timer_ticks: int        # ...and holds at least this many ticks
    offload_repeats: int
    offload_retry_budget: float
    handshake_repeats: int = 1  # openssl s_time runs per TLS server


MODES = {
    # quick: 5 offload runs each in about the time 3 (timer 1) took, with
    # shorter windows.
    "quick": Mode(duration=1.0, warmup=0.2, repeats=3, prime=0.3,
                  retry_budget=15, tiny_duration=0.2, sha_duration=0.4,
                  timer_duration=1.0, timer_ticks=1000, offload_repeats=5,
                  offload_retry_budget=8),
    "full": Mode(duration=5.0, warmup=1.0, repeats=5, prime=2.0,
                 retry_budget=120, tiny_duration=2.0, sha_duration=4.0,
                 timer_duration=3.0, timer_ticks=3000, offload_repeats=5,
                 offload_retry_budget=60, handshake_repeats=3),
}

# C programs bench/ builds: meson target (its path in the build directory)
# -> source, for the fallback build without meson.
BENCH_PROGRAMS = {
    "bench/loadgen": ("bench/loadgen.c", ["-lssl", "-lcrypto", "-lm"]),
    "bench/servers/raw_epoll_echo": ("bench/servers/raw_epoll_echo.c", []),
    "bench/servers/libev_echo": ("bench/servers/libev_echo.c", ["-lev"]),
    "bench/offload/uv_queue_work": ("bench/offload/uv_queue_work.c",
                                    ["-luv"]),
}
# Built by the project itself (they link twincore); used when the build
# has them.
PROJECT_PROGRAMS = ["examples/c/echo_server",
                    "examples/c/tls_echo_server",
                    "bench/offload/tc_pool_roundtrip",
                    "bench/offload/tc_pool_sha256"]


def note(msg):
    print(f"note: {msg}", flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(value, reference):
    if value is None or not reference:
        return None
    return value / reference


# -- building -------------------------------------------------------------


def run_quietly(cmd, log):
    with open(log, "a") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                              cwd=ROOT).returncode == 0


def build(build_dir, log):
    """Returns {target: path} of the C programs that exist afterwards. With
    a configured build, asks meson to bring the targets up to date (a no-op
    when they are); without one, configures it first. If meson cannot
    build them (say the library does not compile), the bench programs are
    compiled with cc into BUILD/bench-cc so the other peers still run."""
    targets = list(BENCH_PROGRAMS) + [
        t for t in PROJECT_PROGRAMS
        if os.path.exists(os.path.join(ROOT, t + ".c"))]
    have = lambda t: os.access(os.path.join(build_dir, t), os.X_OK)
    configured = os.path.exists(os.path.join(build_dir, "build.ninja"))
    if not configured and not all(have(t) for t in targets):
        configured = run_quietly(["meson", "setup", build_dir], log)
        if not configured:
            note(f"meson setup {build_dir} failed (see {log})")
    if configured:
        print(f"building with meson in {build_dir} (log: {log})", flush=True)
        if not run_quietly(["meson", "compile", "-C", build_dir] + targets,
                           log):
            # One failing target (a half-written src/, or no libuv) must
            # not stop the others: build them one by one.
            for t in targets:
                run_quietly(["meson", "compile", "-C", build_dir, t], log)
    found = {t: os.path.join(build_dir, t) for t in targets if have(t)}
    missing = [t for t in BENCH_PROGRAMS if t not in found]
    if missing:
        found.update(build_without_meson(build_dir, missing, log))
    return found


def build_without_meson(build_dir, targets, log):
    out_dir = os.path.join(build_dir, "bench-cc")
    os.makedirs(out_dir, exist_ok=True)
    note(f"building {', '.join(targets)} with cc into {out_dir}")
    found = {}
    for t in targets:
        source, libs = BENCH_PROGRAMS[t]
        exe = os.path.join(out_dir, os.path.basename(t))
        cmd = ["cc", "-std=c11", "-O2", "-D_GNU_SOURCE", "-Wall", "-Wextra",
               "-Werror", "-o", exe, os.path.join(ROOT, source)] + libs
        if run_quietly(cmd, log):
            found[t] = exe
        else:
            note(f"cannot build {t} (see {log})")
    return found


# -- processes -------------------------------------------------------------


def machine_busy_s(cpus=None):
    """Busy CPU seconds so far of the whole machine (as loadgen counts), or
    of the CPUs in the set cpus."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if cpus is None and name != "cpu":
                continue
            if cpus is not None and not (name.startswith("cpu") and
                                         name[3:].isdigit() and
                                         int(name[3:]) in cpus):
                continue
            user, nice, system, _, _, irq, softirq = map(int, rest[:7])
            busy += user + nice + system + irq + softirq
            if cpus is None:
                break
    return busy / os.sysconf("SC_CLK_TCK")


ALL_CPUS = frozenset(os.sched_getaffinity(0))


def pinned(cpus):
    """A preexec_fn pinning the child to one CPU (an int) or a set."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(
        0, {cpus} if isinstance(cpus, int) else cpus)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop_process(proc, timeout=5.0):
    """SIGTERM, then SIGKILL; only ever our own child, by its PID. Returns
    False if it had to be killed."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def tail(path, lines=5):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def python_has(py, modules, env):
    if not modules:
        return True
    code = "".join(f"import {m}\n" for m in modules)
    return subprocess.run([py, "-c", code], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


class Context:
    """What every section gets: the programs, the CPUs, the mode."""

    def __init__(self, args, programs, tmp):
        self.args = args
        self.programs = programs
        self.tmp = tmp
        self.mode = dataclasses.replace(
            MODES[args.mode],
            **{k: v for k, v in (("duration", args.duration),
                                 ("warmup", args.warmup),
                                 ("repeats", args.repeats)) if v})
        self.py = args.python
        self.build_dir = args.build_dir
        self.server_cpu = args.server_cpu
        self.client_cpu = args.client_cpu
        self.retry_left = self.mode.retry_budget

    def wait_for_quiet(self, limit=1.0, cpus=None):
        """Waits, within the retry budget and at most limit seconds, until
        the machine (or the CPUs in cpus) is idle for 0.1 s. Returns False
        if it never was."""
        deadline = time.monotonic() + min(limit, max(self.retry_left, 0))
        while True:
            t0, b0 = time.monotonic(), machine_busy_s(cpus)
            time.sleep(0.1)
            t1, b1 = time.monotonic(), machine_busy_s(cpus)
            if (b1 - b0) / (t1 - t0) <= NOISY_SHARE:
                return True
            self.retry_left -= t1 - t0
            if t1 >= deadline:
                return False

    def measure(self, port, scenario, pid):
        """One loadgen run, repeated while other processes disturbed it and
        the retry budget lasts; returns the quietest (result, error)."""
        best = None
        while True:
            self.wait_for_quiet()
            started = time.monotonic()
            res, err = self.loadgen(port, scenario, self.mode.duration,
                                    self.mode.warmup, pid)
            if res is None:
                return res, err
            res["other_cpu_share"] = other_share(res)
            if best is None or res["other_cpu_share"] < best[0][
                    "other_cpu_share"]:
                best = (res, err)
            if res["other_cpu_share"] <= NOISY_SHARE or self.retry_left <= 0:
                return best
            self.retry_left -= time.monotonic() - started

    def command(self, template, **extra):
        """Fills in a Peer or OffloadBench command and splits it; a program
        of ours points to wherever build() put it."""
        prefix = "{build}/"
        args = []
        for arg in template.split():
            if arg.startswith(prefix) and arg[len(prefix):] in self.programs:
                args.append(self.programs[arg[len(prefix):]])
            else:
                args.append(self.fill(arg, **extra))
        return args

    def fill(self, text, **extra):
        return text.format(build=self.build_dir, bench=BENCH, py=self.py,
                           py312=self.args.python_312,
                           build312=self.args.build_dir_312, **extra)

    def loadgen(self, port, scenario, duration, warmup, pid):
        cmd = [self.programs["bench/loadgen"], "-H", "127.0.0.1", "-P",
               str(port), "-c", str(scenario.connections), "-s",
               str(scenario.size), "-p", str(scenario.pipeline), "-d",
               str(duration), "-w", str(warmup), "--sample-pid", str(pid)]
        if scenario.tls:
            cmd += ["--tls", "-k"]
        if scenario.lines:
            cmd.append("--lines")
        try:
            res = subprocess.run(cmd, capture_output=True, text=True,
                                 timeout=duration + warmup + 30,
                                 preexec_fn=pinned(self.client_cpu))
        except subprocess.TimeoutExpired:
            return None, "load generator timed out"
        lines = res.stdout.strip().splitlines()
        if res.returncode not in (0, 2) or not lines:
            return None, (res.stderr.strip() or f"exit {res.returncode}")
        return json.loads(lines[-1]), res.stderr.strip()


# -- sections --------------------------------------------------------------


class Section:
    """One part of the report. run() returns a JSON-able dict; markdown()
    turns it into lines; charts() draws PNGs into a directory and returns
    their file names. A section that has nothing to run returns None."""
    key = ""
    title = ""

    def run(self, ctx):
        raise NotImplementedError

    def markdown(self, result):
        raise NotImplementedError

    def charts(self, result, out_dir, plt, caption):
        return []


class NetworkSection(Section):
    key = "network"
    title = "Network: echo round trips"

    def start_servers(self, ctx, peers=PEERS, **fill):
        """Starts peers' servers pinned to the server CPU; fill holds
        extra {names} for their commands."""
        servers = {}
        skipped = {}
        wanted = [p for p in peers
                  if not ctx.args.peers or p.name in ctx.args.peers]
        for peer in wanted:
            port = free_port()
            cmd = ctx.command(peer.command, port=port, **fill)
            env = dict(os.environ)
            env.update({k: ctx.fill(v, **fill) for k, v in peer.env})
            missing = [a for a in cmd if "/" in a and not os.path.exists(a)]
            if missing:
                skipped[peer.name] = f"{missing[0]} is missing"
            elif not python_has(ctx.py, peer.modules, env):
                skipped[peer.name] = (f"{ctx.py} cannot import "
                                      f"{', '.join(peer.modules)}")
            else:
                log = os.path.join(ctx.tmp, f"{peer.name}.log")
                proc = subprocess.Popen(
                    cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                    stdout=open(log, "w"), stderr=subprocess.STDOUT,
                    preexec_fn=pinned(ctx.server_cpu),
                    start_new_session=True)
                servers[peer.name] = (proc, port, log)
        for name, (proc, port, log) in list(servers.items()):
            if not wait_listening(proc, port, 20):
                skipped[name] = "server did not start: " + tail(log)
                stop_process(proc)
                del servers[name]
        for name, why in skipped.items():
            note(f"skipping peer {name}: {why}")
        return servers, skipped

    peers = PEERS
    comparisons = COMPARISONS
    chart_prefix = "network"
    reference = REFERENCE_PEER
    goals = NETWORK_GOALS
    headline = SCENARIOS[0].name    # the goals apply to this scenario

    def scenarios(self, ctx):
        return [s for i, s in enumerate(SCENARIOS)
                if not ctx.args.scenarios or i + 1 in ctx.args.scenarios]

    def run(self, ctx, **fill):
        mode = ctx.mode
        scenarios = self.scenarios(ctx)
        servers, skipped = self.start_servers(ctx, self.peers, **fill)
        failed = {}
        raw = {(s.name, name): [] for s in scenarios for name in servers}
        try:
            # A first, unmeasured run per server: allocators and caches
            # settle (asyncio on glibc pays mmap/munmap per read until
            # malloc's dynamic mmap threshold adapts).
            for name, (proc, port, _) in servers.items():
                ctx.loadgen(port, scenarios[0], mode.prime, 0, proc.pid)
            total = len(scenarios) * mode.repeats * len(servers)
            done = 0
            for scenario in scenarios:
                for rep in range(mode.repeats):
                    # Rotating the order spreads any drift over every peer.
                    names = list(servers)
                    k = rep % len(names) if names else 0
                    names = names[k:] + names[:k]
                    for name in names:
                        done += 1
                        proc, port, log = servers[name]
                        if name in failed:
                            continue
                        if proc.poll() is not None:
                            failed[name] = (f"server exited with status "
                                            f"{proc.returncode}: {tail(log)}")
                            note(f"{name}: {failed[name]}")
                            continue
                        res, err = ctx.measure(port, scenario, proc.pid)
                        if res is None:
                            note(f"{name}: {err}")
                            continue
                        res["round"] = rep
                        raw[(scenario.name, name)].append(res)
                        print(f"[{done:3}/{total}] {scenario.name:24} "
                              f"{name:11} {res['msgs_per_s']:>11,.0f} msg/s"
                              f"  server CPU {share(res, 'server'):4.0%}"
                              f"  client CPU {share(res, 'client'):4.0%}"
                              f"  others {res['other_cpu_share']:4.0%}"
                              + (f"  ERRORS {res['errors']}"
                                 if res["errors"] else ""), flush=True)
        finally:
            for name, (proc, _, _) in servers.items():
                if not stop_process(proc):
                    note(f"{name} ignored SIGTERM and was killed")
        peers = [p.name for p in self.peers if p.name in servers]
        return {
            "reference": self.reference,
            "peers": peers,
            "skipped": {**skipped, **failed},
            "server_cpu": ctx.server_cpu,
            "client_cpu": ctx.client_cpu,
            "scenarios": [summarize(s, peers, raw, self.comparisons,
                                    self.reference)
                          for s in scenarios],
        }

    def markdown(self, result):
        ref = result["reference"]
        lines = [
            f"Messages per second are echo round trips completed in the "
            f"window; *per server-CPU-s* divides them by the CPU time "
            f"(user+system) the server process used in that same window. "
            f"Ratios are to {ref} (1.00 = as fast as {ref}), the median of "
            f"the ratios within each round of back-to-back runs"
            f"{'' if ref in result['peers'] else ', which was not measured'}"
            f". Server on CPU "
            f"{result['server_cpu']}, load generator on CPU "
            f"{result['client_cpu']}. † = client-bound: the load "
            f"generator used ≥{CLIENT_BOUND_SHARE:.0%} of its CPU, so "
            f"msgs/s understates the server; compare per server-CPU-s. "
            f"~ = noisy: other processes used more than "
            f"{NOISY_SHARE:.0%} of a CPU during these runs.",
            ""]
        for sc in result["scenarios"]:
            lines += [f"### {sc['name']}"
                      + (f", {sc['pipeline']} in flight per connection"
                         if sc["pipeline"] > 1 else ""),
                      "",
                      "| peer | msgs/s | × " + ref + " | msgs per server-CPU-s"
                      " | × " + ref + " | server CPU | client CPU | p50 µs"
                      " | p99 µs | p99.9 µs | errors |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for name in result["peers"]:
                r = sc["results"].get(name)
                if r is None:
                    continue
                m = r["median"]
                mark = (" †" if r["client_bound"] else "") + (
                    " ~" if r["noisy"] else "")
                lines.append(
                    f"| {name} | {num(m['msgs_per_s'])}{mark} "
                    f"| {fmt_ratio(r['ratio']['msgs_per_s'])} "
                    f"| {num(m['msgs_per_server_cpu_s'])} "
                    f"| {fmt_ratio(r['ratio']['msgs_per_server_cpu_s'])} "
                    f"| {pct(m['server_cpu_share'])} "
                    f"| {pct(m['client_cpu_share'])} "
                    f"| {num(m['p50_us'])} | {num(m['p99_us'])} "
                    f"| {num(m['p999_us'])} | {r['errors']} |")
            lines.append("")
            if sc["comparisons"]:
                headline = sc["name"] == self.headline
                lines += ["Msgs per server-CPU-s, " + ", ".join(
                    f"{k}: **{fmt_ratio(v)}**"
                    + (goal_note(v, ">=", self.goals.get(
                        tuple(k.split(" / "))), headline))
                    for k, v in sc["comparisons"].items()) + ".", ""]
        for name, why in result["skipped"].items():
            lines.append(f"- {name}: not measured ({why})")
        lines.append("")
        return lines

    def charts(self, result, out_dir, plt, caption):
        scen = result["scenarios"]
        if not scen or not result["peers"]:
            return []
        files = []
        specs = [
            (f"{self.chart_prefix}_throughput.png", "round trips per second",
             [("msgs_per_s", "msgs/s"),
              ("msgs_per_server_cpu_s", "msgs per server-CPU-s")]),
            (f"{self.chart_prefix}_latency.png", "latency, µs",
             [("p50_us", "p50"), ("p99_us", "p99")]),
        ]
        for fname, ylabel, metrics in specs:
            fig, axes = plt.subplots(1, len(scen), squeeze=False,
                                     figsize=(4.2 * len(scen), 3.6))
            for ax, sc in zip(axes[0], scen):
                peers = [p for p in result["peers"] if p in sc["results"]]
                width = 0.8 / len(metrics)
                for j, (key, label) in enumerate(metrics):
                    vals = [sc["results"][p]["median"][key] or 0
                            for p in peers]
                    xs = [i + (j - (len(metrics) - 1) / 2) * width
                          for i in range(len(peers))]
                    ax.bar(xs, vals, width, label=label)
                ax.set_xticks(range(len(peers)))
                ax.set_xticklabels(peers, rotation=35, ha="right",
                                   fontsize=8)
                ax.set_title(sc["name"], fontsize=9)
                ax.tick_params(axis="y", labelsize=8)
                ax.yaxis.set_major_formatter(plt.FuncFormatter(
                    lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
                ax.grid(axis="y", alpha=0.3)
            axes[0][0].set_ylabel(ylabel, fontsize=9)
            axes[0][0].legend(fontsize=7)
            fig.suptitle(caption, fontsize=8)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, fname), dpi=80)
            plt.close(fig)
            files.append(fname)
        return files


def share(res, who):
    cpu = res.get(f"{who}_cpu_s", -1)
    return cpu / res["duration_s"] if cpu >= 0 and res["duration_s"] else 0.0


def other_share(res):
    """CPUs' worth of time that neither the server nor the load generator
    used in the window: other processes on the machine."""
    if min(res["busy_cpu_s"], res["server_cpu_s"], res["client_cpu_s"]) < 0:
        return 0.0
    other = res["busy_cpu_s"] - res["server_cpu_s"] - res["client_cpu_s"]
    return max(other, 0.0) / res["duration_s"]


def summarize(scenario, peers, raw, comparisons=COMPARISONS,
              reference=REFERENCE_PEER):
    results = {}
    for name in peers:
        runs = raw.get((scenario.name, name), [])
        if not runs:
            continue
        for r in runs:
            r["msgs_per_server_cpu_s"] = (r["msgs"] / r["server_cpu_s"]
                                          if r["server_cpu_s"] > 0 else None)
        med = {k: median([r[k] for r in runs])
               for k in ("msgs_per_s", "mb_per_s", "p50_us", "p99_us",
                         "p999_us")}
        med["msgs_per_server_cpu_s"] = median(
            [r["msgs_per_server_cpu_s"] for r in runs])
        med["server_cpu_share"] = median([share(r, "server") for r in runs])
        med["client_cpu_share"] = median([share(r, "client") for r in runs])
        med["other_cpu_share"] = median([r["other_cpu_share"] for r in runs])
        results[name] = {
            "median": med,
            "client_bound": med["client_cpu_share"] >= CLIENT_BOUND_SHARE,
            "noisy": med["other_cpu_share"] > NOISY_SHARE,
            "errors": sum(r["errors"] for r in runs),
            "runs": runs,
        }
    # The machine's speed drifts (other virtual machines on the host, for
    # one, which nothing inside this one can see), and a round measures
    # every peer back to back within seconds: so a ratio is the median of
    # the per-round ratios, not the ratio of medians taken across rounds.
    def round_ratio(name, ref, key):
        ref_runs = {r["round"]: r for r in results.get(ref, {}).get("runs",
                                                                     [])}
        return median([ratio(run[key], ref_runs[run["round"]][key])
                       for run in results.get(name, {}).get("runs", [])
                       if run["round"] in ref_runs])

    for name, r in results.items():
        r["ratio"] = {k: round_ratio(name, reference, k)
                      for k in ("msgs_per_s", "msgs_per_server_cpu_s")}
    pairs = {f"{a} / {b}": round_ratio(a, b, "msgs_per_server_cpu_s")
             for a, b in comparisons if a in results and b in results}
    return {**dataclasses.asdict(scenario), "results": results,
            "comparisons": pairs}


@dataclasses.dataclass(frozen=True)
class OffloadBench:
    """An offload program printing one JSON line. kind names its table and
    the fields it prints:
      tiny    tasks_per_s (1,000 tiny tasks in flight), p50_us, p99_us and
              cpu_ms_per_1000 (one task at a time; the Python programs'
              CPU time, all threads, per 1,000 round trips);
      sha256  per_s {"1": ..., "2": ...} (1 MiB buffers hashed per second
              with 1 and 2 workers), ratio (2 / 1) and, from the Python
              programs, mb_per_s {"1": ..., "2": ...} (10^6 bytes/s);
      timer   p50_ms, p99_ms, max_ms, ticks, hashes_per_s.
    command is filled in like Peer.command, plus {duration} and {ticks}.
    one_cpu pins the whole process to one CPU (--server-cpu); otherwise it
    runs on every CPU."""
    name: str
    kind: str
    command: str
    modules: tuple = ()
    env: tuple = ()             # (("NAME", "value with {build}"), ...)
    one_cpu: bool = False


TWINCORE_ENV = (("PYTHONPATH", "{build}/pymod"),)
TWINCORE_312_ENV = (("PYTHONPATH", "{build312}/pymod"),)
PY_OFFLOAD = "{py} {bench}/offload/"
# Every pool has 2 workers. The Python tiny tasks run pinned to one CPU: a
# tiny call holds the GIL, so two workers never run Python at once, and
# passing the GIL between threads of one CPU saves the cross-CPU wakeups
# (measured on the 2-CPU VM: every Python peer 1.2-1.9x faster pinned).
# The C pools, SHA-256 scaling and timer lateness need both CPUs.
OFFLOAD_BENCHES = [
    OffloadBench("twincore defer_to_cpu", "tiny",
                 PY_OFFLOAD + "twincore_offload.py tiny --duration {duration}",
                 ("twincore",), TWINCORE_ENV, one_cpu=True),
    OffloadBench("asyncio run_in_executor", "tiny",
                 PY_OFFLOAD + "asyncio_offload.py tiny --duration {duration}",
                 one_cpu=True),
    OffloadBench("asyncio to_thread", "tiny",
                 PY_OFFLOAD + "asyncio_offload.py tiny --to-thread "
                 "--duration {duration}", one_cpu=True),
    OffloadBench("uvloop run_in_executor", "tiny",
                 PY_OFFLOAD + "asyncio_offload.py tiny --uvloop "
                 "--duration {duration}", ("uvloop",), one_cpu=True),
    OffloadBench("twisted deferToThread", "tiny",
                 PY_OFFLOAD + "twisted_offload.py tiny --duration {duration}",
                 ("twisted",), one_cpu=True),
    OffloadBench("gevent threadpool", "tiny",
                 PY_OFFLOAD + "gevent_offload.py tiny --duration {duration}",
                 ("gevent",), one_cpu=True),
    # The same two on both CPUs: the one-at-a-time latency of a service
    # that is not pinned, where each hand-off may cross CPUs.
    OffloadBench("twincore defer_to_cpu, both CPUs", "tiny",
                 PY_OFFLOAD + "twincore_offload.py tiny --duration {duration}",
                 ("twincore",), TWINCORE_ENV),
    OffloadBench("asyncio run_in_executor, both CPUs", "tiny",
                 PY_OFFLOAD + "asyncio_offload.py tiny --duration {duration}"),
    # The process lane (issue 16): 2 worker processes each, both CPUs.
    OffloadBench("twincore ProcessPool", "tiny",
                 PY_OFFLOAD + "process_lane.py tiny --peer twincore "
                 "--duration {duration}", ("twincore",), TWINCORE_ENV),
    OffloadBench("asyncio ProcessPoolExecutor", "tiny",
                 PY_OFFLOAD + "process_lane.py tiny --peer asyncio "
                 "--duration {duration}"),
    OffloadBench("multiprocessing.Pool", "tiny",
                 PY_OFFLOAD + "process_lane.py tiny --peer mp "
                 "--duration {duration}"),
    # The interpreter lane (issue 17) and, for its goals, the process lane
    # on the same CPython 3.12 (--python-312, --build-dir-312).
    OffloadBench("twincore InterpreterPool (3.12)", "tiny",
                 "{py312} {bench}/offload/process_lane.py tiny --peer interp "
                 "--duration {duration}", ("twincore",), TWINCORE_312_ENV),
    OffloadBench("twincore ProcessPool (3.12)", "tiny",
                 "{py312} {bench}/offload/process_lane.py tiny --peer "
                 "twincore --duration {duration}", ("twincore",),
                 TWINCORE_312_ENV),
    OffloadBench("twincore tc_pool (C)", "tiny",
                 "{build}/bench/offload/tc_pool_roundtrip --threads 2 "
                 "--duration {duration}"),
    OffloadBench("libuv uv_queue_work (C)", "tiny",
                 "{build}/bench/offload/uv_queue_work --threads 2 "
                 "--duration {duration}"),
    OffloadBench("twincore tc_pool + EVP (C)", "sha256",
                 "{build}/bench/offload/tc_pool_sha256 --duration {duration}"),
    # Issue 14: twincore against asyncio's executor with 4 and with 400
    # queued at once (a gather of 400 defers drains a long queue).
    OffloadBench("twincore CpuPool.defer, 4 in flight", "sha256",
                 PY_OFFLOAD + "twincore_offload.py sha256 --inflight 4 "
                 "--duration {duration}", ("twincore",), TWINCORE_ENV),
    OffloadBench("asyncio run_in_executor, 4 in flight", "sha256",
                 PY_OFFLOAD + "asyncio_offload.py sha256 --inflight 4 "
                 "--duration {duration}"),
    OffloadBench("twincore CpuPool.defer, 400 in flight", "sha256",
                 PY_OFFLOAD + "twincore_offload.py sha256 --inflight 400 "
                 "--duration {duration}", ("twincore",), TWINCORE_ENV),
    OffloadBench("asyncio run_in_executor, 400 in flight", "sha256",
                 PY_OFFLOAD + "asyncio_offload.py sha256 --inflight 400 "
                 "--duration {duration}"),
    OffloadBench("twincore", "timer",
                 PY_OFFLOAD + "twincore_offload.py timer "
                 "--duration {duration} --ticks {ticks}",
                 ("twincore",), TWINCORE_ENV),
    OffloadBench("asyncio", "timer",
                 PY_OFFLOAD + "asyncio_offload.py timer "
                 "--duration {duration} --ticks {ticks}"),
    OffloadBench("uvloop", "timer",
                 PY_OFFLOAD + "asyncio_offload.py timer --uvloop "
                 "--duration {duration} --ticks {ticks}", ("uvloop",)),
    OffloadBench("twisted", "timer",
                 PY_OFFLOAD + "twisted_offload.py timer "
                 "--duration {duration} --ticks {ticks}", ("twisted",)),
    OffloadBench("gevent", "timer",
                 PY_OFFLOAD + "gevent_offload.py timer "
                 "--duration {duration} --ticks {ticks}", ("gevent",)),
]
OFFLOAD_REFERENCE = "asyncio run_in_executor"
# The goals of issues #4, #5 and 14: (peer, reference, key, op, goal), the
# figure being the median of per-round ratios peer / reference.
TINY_GOALS = [
    ("twincore defer_to_cpu", "uvloop run_in_executor", "tasks_per_s", ">=",
     4.0),
    ("twincore defer_to_cpu", "asyncio run_in_executor", "p50_us", "<=",
     0.75),
    ("twincore defer_to_cpu, both CPUs",
     "asyncio run_in_executor, both CPUs", "p50_us", "<=", 0.5),
    ("twincore defer_to_cpu", "asyncio run_in_executor", "cpu_ms_per_1000",
     "<=", 1.5),
    ("twincore defer_to_cpu, both CPUs",
     "asyncio run_in_executor, both CPUs", "cpu_ms_per_1000", "<=", 1.5),
    ("twincore ProcessPool", "asyncio ProcessPoolExecutor", "tasks_per_s",
     ">=", 3.0),
    ("twincore ProcessPool", "multiprocessing.Pool", "tasks_per_s", ">=",
     1.0),
    ("twincore ProcessPool", "asyncio ProcessPoolExecutor", "p50_us", "<=",
     0.5),
    ("twincore InterpreterPool (3.12)", "twincore ProcessPool (3.12)",
     "tasks_per_s", ">=", 3.0),
    ("twincore InterpreterPool (3.12)", "twincore ProcessPool (3.12)",
     "p50_us", "<=", 0.5),
    ("twincore tc_pool (C)", "libuv uv_queue_work (C)", "tasks_per_s", ">=",
     1.5),
    ("twincore tc_pool (C)", "libuv uv_queue_work (C)", "p50_us", "<=", 1.0),
]
TINY_GOAL_WHAT = {"tasks_per_s": "tasks/s", "p50_us": "p50",
                  "cpu_ms_per_1000": "CPU time per round trip"}
# SHA-256: the 2 / 1 goals, and (issue 14) twincore's 2-worker MB/s at
# least asyncio's at the same in-flight count, per-round ratios.
SHA_GOALS = {"twincore tc_pool + EVP (C)": 1.85,
             "twincore CpuPool.defer, 4 in flight": 1.9,
             "twincore CpuPool.defer, 400 in flight": 1.9}
SHA_MB_GOALS = [("twincore CpuPool.defer, 4 in flight",
                 "asyncio run_in_executor, 4 in flight", 1.0),
                ("twincore CpuPool.defer, 400 in flight",
                 "asyncio run_in_executor, 400 in flight", 1.0)]
TIMER_SUBJECT = "twincore"
TIMER_GOAL_MS = 1.0     # p99 lateness, and lower than every peer's
TIMER_REFERENCE = "asyncio"
TIMER_RATIO_GOAL = 0.75  # issue 14: p99 / asyncio's, per-round ratios


def per_round_ratio(runs, ref_runs, key):
    """The median over rounds of runs[key] / ref_runs[key], pairing the
    runs of the same round (see summarize). key may be a function of a
    run."""
    get = key if callable(key) else (lambda r: r.get(key))
    ref = {r["round"]: r for r in ref_runs}
    return median([ratio(get(r), get(ref[r["round"]]))
                   for r in runs if r["round"] in ref])


def sha_mb_per_s(run, n):
    """A SHA-256 run's MB/s (10^6 bytes) with n workers; the C program
    prints buffers per second and the size only."""
    if "mb_per_s" in run:
        return run["mb_per_s"][n]
    return run["per_s"][n] * run.get("size", 1 << 20) / 1e6


def summarize_offload(runs, keys):
    results = {}
    for name, rs in runs.items():
        if not rs:
            continue
        med = {k: median([r.get(k) for r in rs]) for k in keys}
        med["other_cpu_share"] = median([r["other_cpu_share"] for r in rs])
        results[name] = {
            "median": med,
            "noisy": med["other_cpu_share"] > NOISY_SHARE,
            "errors": sum(r.get("errors", 0) for r in rs),
            "cpus": rs[0]["cpus"],
            "runs": rs,
        }
    return results


class OffloadSection(Section):
    key = "offload"
    title = "Offload: thread pools"

    def run(self, ctx):
        mode = ctx.mode
        ctx.retry_left = mode.offload_retry_budget
        durations = {"tiny": mode.tiny_duration, "sha256": mode.sha_duration,
                     "timer": mode.timer_duration}
        repeats = dict.fromkeys(("tiny", "sha256", "timer"),
                                ctx.args.repeats or mode.offload_repeats)
        ready, skipped = {}, {}
        for bench in OFFLOAD_BENCHES:
            cmd = ctx.command(bench.command, duration=durations[bench.kind],
                              ticks=mode.timer_ticks)
            env = dict(os.environ)
            env.update({k: ctx.fill(v) for k, v in bench.env})
            missing = [a for a in cmd if "/" in a and not os.path.exists(a)]
            if missing:
                skipped[bench.name] = f"{missing[0]} is missing"
            elif not python_has(cmd[0], bench.modules, env):
                skipped[bench.name] = (f"{cmd[0]} cannot import "
                                       f"{', '.join(bench.modules)}")
            else:
                ready[bench.name] = (bench, cmd, env)
        for name, why in skipped.items():
            note(f"skipping offload {name}: {why}")
        runs = {name: [] for name in ready}
        names = list(ready)
        for rep in range(max(repeats.values())):
            # The list order, reversed every other round: the programs
            # compared (twincore and asyncio, side by side in the list) run
            # back to back and take turns at going first, and a drift
            # favours neither. (A rotation split such a pair in one round.)
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                bench, cmd, env = ready[name]
                if rep >= repeats[bench.kind]:
                    continue
                res, err = self.measure(ctx, bench, cmd, env,
                                        durations[bench.kind])
                if res is None:
                    note(f"offload {name}: {err}")
                    continue
                res["round"] = rep
                runs[name].append(res)
                print(f"[round {rep + 1}] {bench.kind:6} {name:38} "
                      f"{self.progress(bench.kind, res)}  others "
                      f"{res['other_cpu_share']:4.0%}", flush=True)
        kinds = {b.name: b.kind for b in OFFLOAD_BENCHES}
        of = lambda kind: {n: r for n, r in runs.items() if kinds[n] == kind}
        tiny = summarize_offload(of("tiny"), ("tasks_per_s", "p50_us",
                                              "p99_us", "cpu_ms_per_1000"))
        ref_runs = tiny.get(OFFLOAD_REFERENCE, {}).get("runs", [])
        for r in tiny.values():
            r["ratio"] = {k: per_round_ratio(r["runs"], ref_runs, k)
                          for k in ("tasks_per_s", "p50_us",
                                    "cpu_ms_per_1000")}
        goals = []
        for a, b, key, op, goal in TINY_GOALS:
            value = None
            if a in tiny and b in tiny:
                value = per_round_ratio(tiny[a]["runs"], tiny[b]["runs"], key)
            goals.append({"peer": a, "reference": b, "key": key, "op": op,
                          "goal": goal, "value": value,
                          "met": goal_met(value, op, goal)})
        sha = summarize_offload(of("sha256"), ("ratio",))
        for name, r in sha.items():
            r["median"]["per_s"] = {
                n: median([run["per_s"][n] for run in r["runs"]])
                for n in ("1", "2")}
            r["median"]["mb_per_s"] = {
                n: median([sha_mb_per_s(run, n) for run in r["runs"]])
                for n in ("1", "2")}
            r["inflight"] = r["runs"][0].get("inflight")
            r["goal"] = SHA_GOALS.get(name)
            r["met"] = goal_met(r["median"]["ratio"], ">=", r["goal"])
        sha_goals = []
        for a, b, goal in SHA_MB_GOALS:
            value = None
            if a in sha and b in sha:
                value = per_round_ratio(sha[a]["runs"], sha[b]["runs"],
                                        lambda run: sha_mb_per_s(run, "2"))
            sha_goals.append({"peer": a, "reference": b, "key": "mb_per_s",
                              "op": ">=", "goal": goal, "value": value,
                              "met": goal_met(value, ">=", goal)})
        timer = summarize_offload(of("timer"), ("p50_ms", "p99_ms", "max_ms",
                                                "ticks", "hashes_per_s"))
        return {
            "reference": OFFLOAD_REFERENCE,
            "one_cpu": ctx.server_cpu,
            "settings": {"tiny_duration": mode.tiny_duration,
                         "sha_duration": mode.sha_duration,
                         "timer_duration": mode.timer_duration,
                         "timer_ticks": mode.timer_ticks,
                         "repeats": repeats},
            "tiny": {"results": tiny, "goals": goals},
            "sha256": {"results": sha, "goals": sha_goals},
            "timer": {"results": timer, **self.timer_goal(timer)},
            "skipped": skipped,
        }

    @staticmethod
    def measure(ctx, bench, cmd, env, duration):
        """Runs one program, again while other processes disturbed it and
        the retry budget lasts; returns the quietest (result, error). The
        result gains wall_s, cpu_s (the program's own CPU time) and
        other_cpu_share: CPUs' worth of time others used meanwhile on the
        CPUs it ran on."""
        one = bench.one_cpu and ctx.server_cpu is not None
        cpus = {ctx.server_cpu} if one else None
        best = None
        while True:
            ctx.wait_for_quiet(cpus=cpus)
            t0, b0 = time.monotonic(), machine_busy_s(cpus)
            c0 = children_cpu_s()
            try:
                res = subprocess.run(
                    cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                    timeout=6 * duration + 40, stdin=subprocess.DEVNULL,
                    preexec_fn=pinned(cpus if one else ALL_CPUS))
            except subprocess.TimeoutExpired:
                return best or (None, "timed out")
            wall = time.monotonic() - t0
            busy = machine_busy_s(cpus) - b0
            own = children_cpu_s() - c0
            lines = res.stdout.strip().splitlines()
            if res.returncode != 0 or not lines:
                return best or (None, f"exit {res.returncode}: "
                                + res.stderr.strip()[-300:])
            out = json.loads(lines[-1])
            out.update(wall_s=round(wall, 3), cpu_s=round(own, 3),
                       cpus=f"CPU {ctx.server_cpu}" if one else "all",
                       other_cpu_share=max(busy - own, 0.0) / wall)
            if best is None or (out["other_cpu_share"]
                                < best[0]["other_cpu_share"]):
                best = (out, None)
            if out["other_cpu_share"] <= NOISY_SHARE or ctx.retry_left <= 0:
                return best
            ctx.retry_left -= wall

    @staticmethod
    def progress(kind, r):
        if kind == "tiny":
            cpu = r.get("cpu_ms_per_1000")
            return (f"{r['tasks_per_s']:>11,.0f} tasks/s  p50 "
                    f"{r['p50_us']:6.1f} µs  p99 {r['p99_us']:6.1f} µs"
                    + (f"  CPU {cpu:6.1f} ms/1000" if cpu is not None
                       else ""))
        if kind == "sha256":
            return (f"1 worker {r['per_s']['1']:7,.0f}/s  2 workers "
                    f"{r['per_s']['2']:7,.0f}/s  2/1 {r['ratio']:.2f}  "
                    f"{sha_mb_per_s(r, '2'):6,.0f} MB/s")
        return (f"late p50 {r['p50_ms']:6.3f} p99 {r['p99_ms']:6.3f} max "
                f"{r['max_ms']:6.2f} ms  {r['ticks']} ticks  "
                f"{r['hashes_per_s']:,.0f} hashes/s")

    @staticmethod
    def timer_goal(timer):
        mine = timer.get(TIMER_SUBJECT, {}).get("median", {}).get("p99_ms")
        peers = {n: r["median"]["p99_ms"] for n, r in timer.items()
                 if n != TIMER_SUBJECT and r["median"]["p99_ms"] is not None}
        best = min(peers, key=peers.get) if peers else None
        value = None
        if TIMER_SUBJECT in timer and TIMER_REFERENCE in timer:
            value = per_round_ratio(timer[TIMER_SUBJECT]["runs"],
                                    timer[TIMER_REFERENCE]["runs"], "p99_ms")
        return {"goal_ms": TIMER_GOAL_MS,
                "met": goal_met(mine, "<=", TIMER_GOAL_MS),
                "best_peer": best,
                "better_than_every_peer": (
                    None if mine is None or best is None
                    else mine < peers[best]),
                "reference": TIMER_REFERENCE,
                "ratio": value, "ratio_goal": TIMER_RATIO_GOAL,
                "ratio_met": goal_met(value, "<=", TIMER_RATIO_GOAL)}

    def markdown(self, result):
        ref = result["reference"]
        st = result["settings"]
        one = result["one_cpu"]
        tiny = result["tiny"]["results"]
        lines = [
            f"Every pool has 2 worker threads; each program prints one JSON "
            f"line, and each figure is the median over the runs "
            f"(tiny tasks and SHA-256: {st['repeats']['tiny']} runs, timer: "
            f"{st['repeats']['timer']}), the programs taking turns in list "
            f"order, reversed every other round, so twincore and asyncio "
            f"run back to back, each first in turn. ~ = noisy: other "
            f"processes used more than {NOISY_SHARE:.0%} of a CPU during the kept runs (the machine "
            f"is shared; a noisy run is retried while a budget lasts and "
            f"the quietest kept).",
            "",
            "### Tiny tasks",
            "",
            f"A tiny Python call (`x + 1`; C: a few multiplications) "
            f"offloaded and its result brought back to the loop thread. "
            f"tasks/s: 1,000 in flight, each completion submitting the "
            f"next, counted for {st['tiny_duration']} s after 0.2 s of "
            f"warmup; p50/p99: one at a time for {st['tiny_duration']} s, "
            f"from submit to the completion on the loop thread; CPU ms: the "
            f"process's CPU time (every thread: loop, workers, any "
            f"spinning; for the process pools, the parent's only) per "
            f"1,000 of those one-at-a-time round trips. "
            f"Ratios are to {ref}, the median of per-round ratios (for p50 "
            f"and CPU, below 1 is better). The Python programs run pinned to "
            f"{f'CPU {one}' if one is not None else 'one CPU'} (a tiny "
            f"call holds the GIL, so the workers never run Python at once "
            f"and pinning spares cross-CPU wakeups: it made every Python "
            f"peer faster); the C pools use both CPUs, and so do the rows "
            f"marked both CPUs.",
            "",
            f"| peer | tasks/s | × {ref} | p50 µs | p50 × {ref} | p99 µs "
            f"| CPU ms / 1,000 | CPU × {ref} | CPUs | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"]
        for name, r in tiny.items():
            m = r["median"]
            lines.append(
                f"| {name} | {num(m['tasks_per_s'])}"
                f"{' ~' if r['noisy'] else ''} "
                f"| {fmt_ratio(r['ratio']['tasks_per_s'])} "
                f"| {num(m['p50_us'])} | {fmt_ratio(r['ratio']['p50_us'])} "
                f"| {num(m['p99_us'])} | {num(m['cpu_ms_per_1000'])} "
                f"| {fmt_ratio(r['ratio']['cpu_ms_per_1000'])} "
                f"| {r['cpus']} | {r['errors']} |")
        lines.append("")
        for g in result["tiny"]["goals"]:
            what = TINY_GOAL_WHAT.get(g["key"], g["key"])
            lines.append(f"- {g['peer']} / {g['reference']}, {what}: "
                         f"**{fmt_ratio(g['value'])}**"
                         + goal_note(g["value"], g["op"], g["goal"]))
        lines += [
            "",
            "### SHA-256 of 1 MiB buffers, 1 worker vs 2",
            "",
            f"Buffers hashed per second by a pool of 1 worker and one of 2, "
            f"with the given number of buffers in flight (each completion "
            f"submitting the next), in windows ordered 1, 2, 2, 1 "
            f"({st['sha_duration']} s per worker count in all); 2 / 1 is "
            f"the median of each run's own ratio; MB/s is 10^6 bytes/s with "
            f"2 workers. C: `tc_pool_submit` of OpenSSL's `EVP_Digest`; "
            f"twincore: `CpuPool(workers=N).defer(hashlib.sha256, buf)`; "
            f"asyncio: `loop.run_in_executor(ThreadPoolExecutor(N), "
            f"hashlib.sha256, buf)` (hashlib releases the GIL while it "
            f"hashes). 400 in flight: a long queue drained by the workers. "
            f"Both CPUs.",
            "",
            "| program | in flight | 1 worker /s | 2 workers /s | 2 / 1 "
            "| goal | 2 workers MB/s |",
            "|---|--:|--:|--:|--:|---|--:|"]
        for name, r in result["sha256"]["results"].items():
            m = r["median"]
            lines.append(
                f"| {name} | {r['inflight'] or '–'} "
                f"| {num(m['per_s']['1'])} "
                f"| {num(m['per_s']['2'])}{' ~' if r['noisy'] else ''} "
                f"| **{fmt_ratio(m['ratio'])}** "
                f"| {goal_note(m['ratio'], '>=', r['goal']).strip(' ()')} "
                f"| {num(m['mb_per_s']['2'])} |")
        lines.append("")
        for g in result["sha256"]["goals"]:
            lines.append(f"- {g['peer']} / {g['reference']}, 2 workers "
                         f"MB/s: **{fmt_ratio(g['value'])}**"
                         + goal_note(g["value"], g["op"], g["goal"]))
        timer = result["timer"]
        lines += [
            "",
            "### Timer lateness while 2 workers hash",
            "",
            f"A 1 ms timer on the loop, re-armed by each tick, while the "
            f"loop's own pool (2 workers) hashes 1 MiB buffers with "
            f"`hashlib.sha256` (4 in flight, resubmitted from the loop). "
            f"Lateness = when the tick ran - when it was due (negative: "
            f"early), over a window opening 0.2 s after the load starts and "
            f"lasting at least {st['timer_duration']} s and "
            f"{st['timer_ticks']:,} ticks. twincore: `reactor.call_later`; "
            f"asyncio and uvloop: `loop.call_later`; Twisted: a "
            f"`LoopingCall` (fixed grid; due = its DelayedCall's time); "
            f"gevent: `gevent.sleep(0.001)` in a greenlet. hashes/s shows "
            f"the load. Both CPUs, nothing pinned: the loop thread competes "
            f"with the two workers for two CPUs, as in an unpinned service.",
            "",
            "| loop | p50 ms | p99 ms | max ms | ticks | hashes/s |",
            "|---|--:|--:|--:|--:|--:|"]
        for name, r in timer["results"].items():
            m = r["median"]
            lines.append(
                f"| {name} | {m['p50_ms']:.3f} | **{m['p99_ms']:.3f}**"
                f"{' ~' if r['noisy'] else ''} | {m['max_ms']:.2f} "
                f"| {m['ticks']:,.0f} | {num(m['hashes_per_s'])} |")
        mine = timer["results"].get(TIMER_SUBJECT)
        if mine is not None:
            p99 = mine["median"]["p99_ms"]
            best = timer["best_peer"]
            lines += ["", f"- {TIMER_SUBJECT} p99: **{p99:.3f} ms**"
                      + goal_note(p99, "<=", timer["goal_ms"])
                      + (f"; lowest peer p99: {best} "
                         f"{timer['results'][best]['median']['p99_ms']:.3f}"
                         f" ms, so {TIMER_SUBJECT} is "
                         + ("lower than every peer (goal: met)"
                            if timer["better_than_every_peer"]
                            else "**not** lower than every peer (goal: "
                            "**not met**)") if best else "")]
            if timer["ratio"] is not None:
                lines.append(f"- {TIMER_SUBJECT} p99 / {timer['reference']}"
                             f" p99: **{fmt_ratio(timer['ratio'])}**"
                             + goal_note(timer["ratio"], "<=",
                                         timer["ratio_goal"]))
        lines.append("")
        for name, why in result["skipped"].items():
            lines.append(f"- {name}: not measured ({why})")
        lines.append("")
        return lines

    def charts(self, result, out_dir, plt, caption):
        files = []
        # The caption names the network runs' repeats; these have their own.
        n = result["settings"]["repeats"]["tiny"]
        caption = (caption.rsplit(" (median of", 1)[0]
                   + f" (median of {n} run{'s' if n > 1 else ''})")
        tiny = result["tiny"]["results"]
        if tiny:
            names = list(tiny)[::-1]
            vals = [tiny[n]["median"]["tasks_per_s"] or 0 for n in names]
            fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.2))
            colors = ["tab:orange" if n.startswith("twincore") else
                      "tab:blue" for n in names]
            ax.barh(range(len(names)), vals, color=colors)
            ax.set_xscale("log")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names, fontsize=8)
            for i, n in enumerate(names):
                rr = tiny[n]["ratio"]["tasks_per_s"]
                ax.text(vals[i], i, f" {vals[i]:,.0f}"
                        + (f" ({rr:.1f}x)" if rr else ""),
                        va="center", fontsize=7)
            ax.set_xlabel(f"tiny-task round trips per second, 1,000 in "
                          f"flight (log scale; ratio to "
                          f"{result['reference']})", fontsize=8)
            ax.set_xlim(left=1e4, right=max(vals) * 12)
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
            fig.suptitle(caption, fontsize=8)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, "offload_throughput.png"),
                        dpi=80)
            plt.close(fig)
            files.append("offload_throughput.png")
        timer = result["timer"]["results"]
        if timer:
            names = list(timer)
            fig, ax = plt.subplots(figsize=(6, 3.4))
            width = 0.4
            for j, (key, label) in enumerate((("p50_ms", "p50"),
                                              ("p99_ms", "p99"))):
                ax.bar([i + (j - 0.5) * width for i in range(len(names))],
                       [timer[n]["median"][key] for n in names], width,
                       label=label)
            ax.axhline(TIMER_GOAL_MS, color="tab:red", linestyle="--",
                       linewidth=1, label=f"goal p99 ≤ {TIMER_GOAL_MS:g} ms")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, fontsize=8)
            ax.set_ylabel("lateness of a 1 ms timer, ms", fontsize=8)
            ax.set_title("while 2 workers hash 1 MiB buffers", fontsize=9)
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=7)
            fig.suptitle(caption, fontsize=8)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, "timer_lateness.png"), dpi=80)
            plt.close(fig)
            files.append("timer_lateness.png")
        return files

# -- TLS (issue 6) ----------------------------------------------------------

# The TLS echo servers, given a throw-away P-256 certificate ({cert},
# {key}) made at run time; ratios are to REFERENCE_PEER as in the network
# section. Issue #6: twincore at 1.5x uvloop's msgs/s or better, compared
# per server-CPU-s as well.
TLS_PEERS = [
    Peer("twincore-c",
         "{build}/examples/c/tls_echo_server {port} {cert} {key}"),
    Peer("twincore-py",
         "{py} {bench}/servers/twincore_tls_echo.py {port} {cert} {key}",
         ("twincore",), (("PYTHONPATH", "{build}/pymod"),)),
    Peer("uvloop", "{py} {bench}/servers/uvloop_echo.py {port} --tls {cert} "
         "{key}", ("uvloop",)),
    Peer("asyncio", "{py} {bench}/servers/asyncio_echo.py {port} --tls "
         "{cert} {key}"),
]
TLS_SCENARIO = Scenario("1 KiB x 64 connections over TLS", 1024, 64,
                        tls=True)
TLS_COMPARISONS = [("twincore-c", "uvloop"), ("twincore-py", "uvloop")]
TLS_GOAL = 1.5
# Full handshakes (`openssl s_time -new`, one connection at a time) against
# these servers; "openssl" needs no build.
HANDSHAKE_PEERS = [
    TLS_PEERS[0], TLS_PEERS[2],
    Peer("openssl s_server", "openssl s_server -accept 127.0.0.1:{port} "
         "-cert {cert} -key {key} -quiet -www"),
]
HANDSHAKE_SECONDS = 2   # s_time -time
HANDSHAKE_REFERENCE = "openssl s_server"


def make_certificate(directory):
    """A self-signed P-256 certificate for 127.0.0.1, valid one day; returns
    (cert, key) paths, or None without a working openssl command."""
    cert = os.path.join(directory, "tls-cert.pem")
    key = os.path.join(directory, "tls-key.pem")
    try:
        res = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
             cert, "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        note(f"openssl req: {e}")
        return None
    if res.returncode != 0:
        note(f"openssl req failed: {res.stderr.strip()}")
        return None
    return cert, key


def process_cpu_s(pid):
    """CPU seconds (user+system) used so far by a running process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TLSSection(NetworkSection):
    key = "tls"
    title = "TLS: echo round trips and handshakes"
    peers = TLS_PEERS
    comparisons = TLS_COMPARISONS
    chart_prefix = "tls"

    def scenarios(self, ctx):
        return [TLS_SCENARIO]

    def run(self, ctx):
        made = make_certificate(ctx.tmp)
        if made is None:
            return None
        cert, key = made
        result = super().run(ctx, cert=cert, key=key)
        result["goal"] = TLS_GOAL
        result["handshakes"] = self.handshakes(ctx, cert, key)
        return result

    def handshakes(self, ctx, cert, key):
        if shutil.which("openssl") is None:
            return {"results": {}, "skipped": {"all": "no openssl command"}}
        servers, skipped = self.start_servers(ctx, HANDSHAKE_PEERS,
                                              cert=cert, key=key)
        runs = {name: [] for name in servers}
        try:
            for rep in range(ctx.mode.handshake_repeats):
                names = list(servers)
                k = rep % len(names) if names else 0
                names = names[k:] + names[:k]
                for name in names:
                    proc, port, log = servers[name]
                    if proc.poll() is not None:
                        skipped[name] = (f"server exited with status "
                                         f"{proc.returncode}: {tail(log)}")
                        continue
                    res = self.s_time(ctx, port, proc.pid)
                    if res is None:
                        continue
                    res["round"] = rep
                    runs[name].append(res)
                    print(f"handshakes {name:17} {res['per_s']:>8,.0f}/s  "
                          f"{res['per_server_cpu_s']:>8,.0f} per server-"
                          f"CPU-s  others {res['other_cpu_share']:4.0%}",
                          flush=True)
        finally:
            for name, (proc, _, _) in servers.items():
                stop_process(proc)
        results = {}
        for name, rs in runs.items():
            if not rs:
                skipped.setdefault(name, "s_time failed")
                continue
            results[name] = {
                "median": {k: median([r[k] for r in rs])
                           for k in ("per_s", "per_server_cpu_s",
                                     "server_cpu_share", "other_cpu_share")},
                "runs": rs}
        for name, r in results.items():
            r["ratio"] = {
                ref: median([ratio(run["per_server_cpu_s"],
                                   ref_run["per_server_cpu_s"])
                             for run in r["runs"]
                             for ref_run in results[ref]["runs"]
                             if ref_run["round"] == run["round"]])
                if ref in results else None
                for ref in (HANDSHAKE_REFERENCE, REFERENCE_PEER)}
            r["noisy"] = r["median"]["other_cpu_share"] > NOISY_SHARE
        return {"seconds": HANDSHAKE_SECONDS,
                "repeats": ctx.mode.handshake_repeats,
                "results": results, "skipped": skipped}

    def s_time(self, ctx, port, pid):
        ctx.wait_for_quiet()
        cpu0, busy0 = process_cpu_s(pid), machine_busy_s()
        child0, t0 = children_cpu_s(), time.monotonic()
        try:
            res = subprocess.run(
                ["openssl", "s_time", "-connect", f"127.0.0.1:{port}",
                 "-new", "-time", str(HANDSHAKE_SECONDS)],
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
                timeout=HANDSHAKE_SECONDS + 20,
                preexec_fn=pinned(ctx.client_cpu))
        except subprocess.TimeoutExpired:
            note("openssl s_time timed out")
            return None
        wall = time.monotonic() - t0
        cpu1, busy1 = process_cpu_s(pid), machine_busy_s()
        client = children_cpu_s() - child0
        count = None
        for line in res.stdout.splitlines():
            if "connections in" in line and "real seconds" in line:
                count = int(line.split()[0])
        if res.returncode != 0 or not count or cpu0 is None or cpu1 is None:
            note(f"openssl s_time: exit {res.returncode}: "
                 f"{(res.stderr or res.stdout).strip()[-300:]}")
            return None
        server = cpu1 - cpu0
        return {"handshakes": count, "wall_s": round(wall, 3),
                "server_cpu_s": server, "client_cpu_s": round(client, 3),
                "per_s": count / wall,
                "per_server_cpu_s": count / server if server > 0 else None,
                "server_cpu_share": server / wall,
                "other_cpu_share": max(busy1 - busy0 - server - client, 0)
                / wall}

    def markdown(self, result):
        ref = result["reference"]
        sc = result["scenarios"][0]
        lines = [
            f"1 KiB echo round trips over TLS (`loadgen --tls -k`, OpenSSL, "
            f"64 connections, one message in flight each) against a "
            f"throw-away self-signed P-256 certificate made at run time. "
            f"twincore-c: `examples/c/tls_echo_server` (`tc_tls_wrap`); "
            f"twincore-py: `bench/servers/twincore_tls_echo.py` "
            f"(`reactor.listen_tls`); uvloop and asyncio: "
            f"`asyncio_echo.py --tls` (Python `ssl`). Columns, pinning, † "
            f"and ~ as in the network section: server on CPU "
            f"{result['server_cpu']}, load generator on CPU "
            f"{result['client_cpu']}; ratios to {ref} are per-round "
            f"medians.",
            "",
            f"| peer | msgs/s | × {ref} | msgs per server-CPU-s | × {ref} "
            f"| server CPU | client CPU | p50 µs | p99 µs | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for name in result["peers"]:
            r = sc["results"].get(name)
            if r is None:
                continue
            m = r["median"]
            mark = (" †" if r["client_bound"] else "") + (
                " ~" if r["noisy"] else "")
            lines.append(
                f"| {name} | {num(m['msgs_per_s'])}{mark} "
                f"| {fmt_ratio(r['ratio']['msgs_per_s'])} "
                f"| {num(m['msgs_per_server_cpu_s'])} "
                f"| {fmt_ratio(r['ratio']['msgs_per_server_cpu_s'])} "
                f"| {pct(m['server_cpu_share'])} "
                f"| {pct(m['client_cpu_share'])} "
                f"| {num(m['p50_us'])} | {num(m['p99_us'])} "
                f"| {r['errors']} |")
        lines.append("")
        for a, b in TLS_COMPARISONS:
            r = sc["results"].get(a)
            if r is None or b not in sc["results"]:
                continue
            lines.append(
                f"- {a} / {b}, msgs/s: **{fmt_ratio(r['ratio']['msgs_per_s'])}"
                f"**" + goal_note(r["ratio"]["msgs_per_s"], ">=",
                                  result["goal"])
                + f"; per server-CPU-s: **"
                f"{fmt_ratio(r['ratio']['msgs_per_server_cpu_s'])}**")
        hs = result["handshakes"]
        if hs["results"]:
            lines += [
                "",
                f"Full handshakes, one connection at a time: `openssl s_time "
                f"-connect 127.0.0.1:PORT -new -time {hs['seconds']}` on the "
                f"load generator's CPU (median of {hs['repeats']} "
                f"run{'s' if hs['repeats'] > 1 else ''}). s_time is the "
                f"bottleneck, so compare per server-CPU-s; ratios are of "
                f"that column.",
                "",
                f"| server | handshakes/s | per server-CPU-s "
                f"| × {HANDSHAKE_REFERENCE} | × {ref} | server CPU |",
                "|---|--:|--:|--:|--:|--:|"]
            for name, r in hs["results"].items():
                m = r["median"]
                lines.append(
                    f"| {name} | {num(m['per_s'])}"
                    f"{' ~' if r['noisy'] else ''} "
                    f"| **{num(m['per_server_cpu_s'])}** "
                    f"| {fmt_ratio(r['ratio'][HANDSHAKE_REFERENCE])} "
                    f"| {fmt_ratio(r['ratio'][REFERENCE_PEER])} "
                    f"| {pct(m['server_cpu_share'])} |")
        lines.append("")
        skipped = {**result["skipped"],
                   **{f"{k} (handshakes)": v
                      for k, v in hs["skipped"].items()}}
        for name, why in skipped.items():
            lines.append(f"- {name}: not measured ({why})")
        lines.append("")
        return lines


def children_cpu_s():
    """CPU seconds used so far by the waited-for children of this process."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- line echo (issue 18) ----------------------------------------------------

# One line in, the same line out: streams (async for line in reader: write,
# await drain()) and LineReceiver peers, bench/servers/line_echo.py.
_LINE_ECHO = "{py} {bench}/servers/line_echo.py "
_TWINCORE_ENV = (("PYTHONPATH", "{build}/pymod"),)
LINE_PEERS = [
    # The limit: bytes echoed as they come (a line is one read here), C,
    # no framing at all.
    Peer("raw-epoll", "{build}/bench/servers/raw_epoll_echo {port}"),
    Peer("twincore-streams", _LINE_ECHO + "twincore-streams {port}",
         ("twincore",), _TWINCORE_ENV),
    Peer("uvloop-streams", _LINE_ECHO + "uvloop-streams {port}",
         ("uvloop",)),
    Peer("asyncio-streams", _LINE_ECHO + "asyncio-streams {port}"),
    Peer("twincore-lines", _LINE_ECHO + "twincore-lines {port}",
         ("twincore",), _TWINCORE_ENV),
    Peer("twisted-lines", _LINE_ECHO + "twisted-lines {port}",
         ("twisted",)),
]
LINE_SCENARIO = Scenario("64 B lines x 64 connections", 64, 64, lines=True)
LINE_COMPARISONS = [("twincore-streams", "asyncio-streams"),
                    ("twincore-streams", "uvloop-streams"),
                    ("twincore-lines", "twisted-lines"),
                    ("raw-epoll", "asyncio-streams"),
                    ("twincore-streams", "raw-epoll")]
# Issue 18's goals, per server-CPU-second.
LINE_GOALS = {("twincore-streams", "asyncio-streams"): 2.0,
              ("twincore-streams", "uvloop-streams"): 1.2,
              ("twincore-lines", "twisted-lines"): 3.0}


class LinesSection(NetworkSection):
    key = "lines"
    title = "Lines: line echo on streams and LineReceiver"
    peers = LINE_PEERS
    comparisons = LINE_COMPARISONS
    chart_prefix = "lines"
    reference = "uvloop-streams"
    goals = LINE_GOALS
    headline = LINE_SCENARIO.name

    def scenarios(self, ctx):
        return [LINE_SCENARIO]


SECTIONS = [NetworkSection(), OffloadSection(), TLSSection(), LinesSection()]


# -- report ----------------------------------------------------------------


def num(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}"


def goal_met(value, op, goal):
    if value is None or goal is None:
        return None
    return value >= goal if op == ">=" else value <= goal


def goal_note(value, op, goal, show=True):
    """The note after a figure, ' (goal ≥ 0.95: met)', or '' without a
    goal."""
    if goal is None or not show:
        return ""
    met = goal_met(value, op, goal)
    verdict = "–" if met is None else ("met" if met else "**not met**")
    return f" (goal {'≥' if op == '>=' else '≤'} {goal:g}: {verdict})"


def pct(v):
    return "–" if v is None else f"{v:.0%}"


def machine():
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    uname = subprocess.run(["uname", "-srm"], capture_output=True,
                           text=True).stdout.strip()
    return {"uname": uname, "cpu": cpu, "cpus": os.cpu_count()}


def write_report(report, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    charts = {}
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib is missing: no charts (apt-get install "
             "python3-matplotlib)")
        plt = None
    m = report["machine"]
    caption = (f"{report['date']}, {m['uname']}, {m['cpu']} x{m['cpus']}, "
               f"{report['mode']} mode (median of "
               f"{report['settings']['repeats']})")
    for section in SECTIONS:
        result = report["sections"].get(section.key)
        if result is not None and plt is not None:
            charts[section.key] = section.charts(result, out_dir, plt,
                                                 caption)
    mode = report["settings"]
    lines = [
        "# twincore benchmark results",
        "",
        f"- Date: {report['date']}",
        f"- Machine: `{m['uname']}`, {m['cpu']}, {m['cpus']} CPUs",
        f"- Mode: {report['mode']}: each network figure is the median of "
        f"{mode['repeats']} runs of {mode['duration']} s measured after "
        f"{mode['warmup']} s of warmup; the offload section states its own",
        "- The machine is shared with other work (builds, tests, fuzzers "
        "of other sessions): runs disturbed by other processes are retried "
        "while a time budget lasts and marked ~ when none was quiet. "
        "Figures move 10-30% between runs; the ratios much less.",
        f"- Command: `{report['command']}` ({report['wall_time_s']:.0f} s)",
        "",
    ]
    for section in SECTIONS:
        result = report["sections"].get(section.key)
        if result is None:
            continue
        lines += [f"## {section.title}", ""] + section.markdown(result)
        lines += [f"![{f}]({f})" for f in charts.get(section.key, [])]
        lines.append("")
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    return lines


def parse_args():
    cpus = sorted(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="mode", action="store_const",
                   const="quick", help="about 4 minutes (the default)")
    g.add_argument("--full", dest="mode", action="store_const", const="full",
                   help="longer windows and 5 repeats")
    p.add_argument("--build-dir", default="build",
                   help="meson build directory, relative to the repository "
                   "(default: build)")
    p.add_argument("--out", default=os.path.join(BENCH, "results"),
                   help="where latest.json, latest.md and the PNGs go")
    p.add_argument("--peers", type=lambda s: s.split(","),
                   help="comma-separated peer names (default: all): "
                   + ",".join(dict.fromkeys(
                       peer.name for peer in PEERS + LINE_PEERS)))
    p.add_argument("--scenarios", type=lambda s: [int(x) for x in
                                                  s.split(",")],
                   help="comma-separated scenario numbers, 1-based")
    p.add_argument("--sections", type=lambda s: s.split(","),
                   help="comma-separated: "
                   + ",".join(s.key for s in SECTIONS))
    p.add_argument("--repeats", type=int)
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="warmup seconds per run")
    p.add_argument("--python", default=DEBIAN_PYTHON if os.path.exists(
        DEBIAN_PYTHON) else sys.executable,
        help="interpreter for the Python peers (default: Debian's)")
    p.add_argument("--python-312", default=os.path.join(
        ROOT, "build-venv-py312", "bin", "python3"),
        help="CPython 3.12 for the interpreter lane (default: the venv "
        "scripts/dev.sh makes); absent: those rows are skipped")
    p.add_argument("--build-dir-312", default="build-py312",
                   help="its meson build directory (default: build-py312)")
    p.add_argument("--server-cpu", type=int,
                   default=cpus[1] if len(cpus) > 1 else None)
    p.add_argument("--client-cpu", type=int, default=cpus[0])
    args = p.parse_args()
    args.mode = args.mode or "quick"
    args.build_dir = os.path.join(ROOT, args.build_dir)
    args.build_dir_312 = os.path.join(ROOT, args.build_dir_312)
    return args


def main():
    args = parse_args()
    started = time.monotonic()
    if args.server_cpu is None:
        note("one CPU only: server and load generator share it")
    elif args.server_cpu == args.client_cpu:
        note("server and load generator pinned to the same CPU")
    # The runner mostly sleeps; keep it off the server's CPU.
    os.sched_setaffinity(0, {args.client_cpu})
    tmp_root = os.path.join(BENCH, "results", "tmp")
    os.makedirs(tmp_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="run-", dir=tmp_root)
    programs = build(args.build_dir, os.path.join(tmp, "build.log"))
    if "bench/loadgen" not in programs:
        sys.exit("error: bench/loadgen could not be built; see "
                 + os.path.join(tmp, "build.log"))
    ctx = Context(args, programs, tmp)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "mode": args.mode,
        "command": shlex.join([sys.executable, "bench/run.py"] + sys.argv[1:]),
        "settings": dataclasses.asdict(ctx.mode),
        "sections": {},
    }
    for section in SECTIONS:
        if args.sections and section.key not in args.sections:
            continue
        print(f"== {section.title}", flush=True)
        report["sections"][section.key] = section.run(ctx)
    report["wall_time_s"] = round(time.monotonic() - started, 1)
    lines = write_report(report, args.out)
    print("\n".join(lines))
    print(f"wrote {os.path.join(args.out, 'latest.md')} and latest.json "
          f"in {report['wall_time_s']:.0f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
