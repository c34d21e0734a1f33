#!/usr/bin/python3
"""bench/run.py: one command that runs every twincore benchmark.

    /usr/bin/python3 bench/run.py --quick     # under 3 minutes
    /usr/bin/python3 bench/run.py --full      # longer windows, 5 repeats

Builds the C programs with meson if the build directory lacks them, starts
each peer's echo server pinned to one CPU, drives it with bench/loadgen
pinned to another, repeats every measurement and keeps the median, and
writes bench/results/latest.json, latest.md and PNG charts. Peers whose
server is missing are skipped with a printed note.

The work is split in sections (SECTIONS at the bottom): each runs, renders
its Markdown and draws its charts. The offload comparison of issue #3 is
the OffloadSection, whose table (OFFLOAD_BENCHES) holds one program per
peer; a network peer is one line in PEERS.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
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
    Peer("libev", "{build}/bench/servers/libev_echo {port}"),
    Peer("uvloop", "{py} {bench}/servers/uvloop_echo.py {port}", ("uvloop",)),
    Peer("asyncio", "{py} {bench}/servers/asyncio_echo.py {port}"),
    Peer("twisted", "{py} {bench}/servers/twisted_echo.py {port}",
         ("twisted",)),
    Peer("gevent", "{py} {bench}/servers/gevent_echo.py {port}", ("gevent",)),
]
REFERENCE_PEER = "uvloop"
# Pairs also compared directly (per server-CPU-s, per-round medians) under
# each table: issue #2's goal is twincore-c at 0.95x raw-epoll or better.
COMPARISONS = [("twincore-c", "raw-epoll"), ("libev", "raw-epoll"),
               ("twincore-c", "libev")]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    connections: int
    pipeline: int = 1


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


MODES = {
    "quick": Mode(duration=1.0, warmup=0.3, repeats=3, prime=0.5,
                  retry_budget=15),
    "full": Mode(duration=5.0, warmup=1.0, repeats=5, prime=2.0,
                 retry_budget=120),
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
# Built by the project itself; used when the build has them.
PROJECT_PROGRAMS = ["examples/c/echo_server"]


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


def machine_busy_s():
    """Busy CPU seconds of the whole machine so far (as loadgen counts)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _, _, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


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

    def wait_for_quiet(self, limit=1.0):
        """Waits, within the retry budget and at most limit seconds, until
        the machine is idle for 0.1 s. Returns False if it never was."""
        deadline = time.monotonic() + min(limit, max(self.retry_left, 0))
        while True:
            t0, b0 = time.monotonic(), machine_busy_s()
            time.sleep(0.1)
            t1, b1 = time.monotonic(), machine_busy_s()
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
                           **extra)

    def loadgen(self, port, scenario, duration, warmup, pid):
        cmd = [self.programs["bench/loadgen"], "-H", "127.0.0.1", "-P",
               str(port), "-c", str(scenario.connections), "-s",
               str(scenario.size), "-p", str(scenario.pipeline), "-d",
               str(duration), "-w", str(warmup), "--sample-pid", str(pid)]
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

    def start_servers(self, ctx):
        servers = {}
        skipped = {}
        wanted = [p for p in PEERS
                  if not ctx.args.peers or p.name in ctx.args.peers]
        for peer in wanted:
            port = free_port()
            cmd = ctx.command(peer.command, port=port)
            env = dict(os.environ)
            env.update({k: ctx.fill(v) for k, v in peer.env})
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

    def run(self, ctx):
        mode = ctx.mode
        scenarios = [s for i, s in enumerate(SCENARIOS)
                     if not ctx.args.scenarios or i + 1 in ctx.args.scenarios]
        servers, skipped = self.start_servers(ctx)
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
                    names = names[rep % len(names):] + names[:rep % len(names)]
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
        peers = [p.name for p in PEERS if p.name in servers]
        return {
            "reference": REFERENCE_PEER,
            "peers": peers,
            "skipped": {**skipped, **failed},
            "server_cpu": ctx.server_cpu,
            "client_cpu": ctx.client_cpu,
            "scenarios": [summarize(s, peers, raw) for s in scenarios],
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
                lines += ["Msgs per server-CPU-s, " + ", ".join(
                    f"{k}: **{fmt_ratio(v)}**"
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
            ("network_throughput.png", "round trips per second",
             [("msgs_per_s", "msgs/s"),
              ("msgs_per_server_cpu_s", "msgs per server-CPU-s")]),
            ("network_latency.png", "latency, µs",
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


def summarize(scenario, peers, raw):
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
        r["ratio"] = {k: round_ratio(name, REFERENCE_PEER, k)
                      for k in ("msgs_per_s", "msgs_per_server_cpu_s")}
    pairs = {f"{a} / {b}": round_ratio(a, b, "msgs_per_server_cpu_s")
             for a, b in COMPARISONS if a in results and b in results}
    return {**dataclasses.asdict(scenario), "results": results,
            "comparisons": pairs}


@dataclasses.dataclass(frozen=True)
class OffloadBench:
    """An offload program printing one JSON line with tasks_per_s (1,000
    tiny tasks in flight) and p50_us/p99_us (one task at a time)."""
    name: str
    command: str            # filled in like Peer.command, plus {duration}
    modules: tuple = ()


# TODO(#3): twincore's pool and defer_to_cpu, asyncio run_in_executor and
# to_thread, uvloop, Twisted deferToThread, gevent's threadpool; SHA-256 of
# 1 MiB with 1 vs 2 workers; timer lateness while the pool is saturated.
OFFLOAD_BENCHES = [
    OffloadBench("libuv uv_queue_work (C)",
                 "{build}/bench/offload/uv_queue_work --duration {duration}"),
]
OFFLOAD_REFERENCE = "asyncio run_in_executor"


class OffloadSection(Section):
    key = "offload"
    title = "Offload: tiny-task round trips"

    def run(self, ctx):
        results = {}
        skipped = {}
        duration = min(ctx.mode.duration, 2.0)
        for bench in OFFLOAD_BENCHES:
            cmd = ctx.command(bench.command, duration=duration)
            missing = [a for a in cmd if "/" in a and not os.path.exists(a)]
            if missing:
                skipped[bench.name] = f"{missing[0]} is missing"
                note(f"skipping offload {bench.name}: {skipped[bench.name]}")
                continue
            if not python_has(ctx.py, bench.modules, None):
                skipped[bench.name] = f"cannot import {bench.modules}"
                continue
            runs = []
            for _ in range(ctx.mode.repeats):
                # Pools need every CPU, not the runner's pinned one.
                res = subprocess.run(cmd, capture_output=True, text=True,
                                     timeout=4 * duration + 30, cwd=ROOT,
                                     preexec_fn=pinned(ALL_CPUS))
                if res.returncode == 0 and res.stdout.strip():
                    last = res.stdout.strip().splitlines()[-1]
                    runs.append(json.loads(last))
                else:
                    note(f"{bench.name}: {res.stderr.strip()}")
            if runs:
                med = {k: median([r.get(k) for r in runs])
                       for k in ("tasks_per_s", "p50_us", "p99_us")}
                results[bench.name] = {"median": med, "runs": runs}
                print(f"offload {bench.name}: {med['tasks_per_s']:,.0f} "
                      f"tasks/s, one at a time p50 {med['p50_us']:.1f} µs "
                      f"p99 {med['p99_us']:.1f} µs", flush=True)
        ref = results.get(OFFLOAD_REFERENCE, {}).get("median", {})
        for r in results.values():
            r["ratio"] = {"tasks_per_s": ratio(r["median"]["tasks_per_s"],
                                               ref.get("tasks_per_s"))}
        return {"reference": OFFLOAD_REFERENCE, "results": results,
                "skipped": skipped}

    def markdown(self, result):
        ref = result["reference"]
        missing = "" if ref in result["results"] else " (not measured yet)"
        lines = [f"Tiny tasks: throughput with 1,000 in flight, and the "
                 f"round trip of one task at a time. Ratios are to {ref}"
                 f"{missing}.",
                 "",
                 f"| peer | tasks/s | × {ref} | p50 µs | p99 µs |",
                 "|---|--:|--:|--:|--:|"]
        for name, r in result["results"].items():
            m = r["median"]
            lines.append(f"| {name} | {num(m['tasks_per_s'])} "
                         f"| {fmt_ratio(r['ratio']['tasks_per_s'])} "
                         f"| {num(m['p50_us'])} | {num(m['p99_us'])} |")
        lines.append("")
        for name, why in result["skipped"].items():
            lines.append(f"- {name}: not measured ({why})")
        lines.append("")
        return lines


SECTIONS = [NetworkSection(), OffloadSection()]


# -- report ----------------------------------------------------------------


def num(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}"


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
        f"- Mode: {report['mode']}: each figure is the median of "
        f"{mode['repeats']} runs of {mode['duration']} s measured after "
        f"{mode['warmup']} s of warmup",
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
                   const="quick", help="under 3 minutes (the default)")
    g.add_argument("--full", dest="mode", action="store_const", const="full",
                   help="longer windows and 5 repeats")
    p.add_argument("--build-dir", default="build",
                   help="meson build directory, relative to the repository "
                   "(default: build)")
    p.add_argument("--out", default=os.path.join(BENCH, "results"),
                   help="where latest.json, latest.md and the PNGs go")
    p.add_argument("--peers", type=lambda s: s.split(","),
                   help="comma-separated peer names (default: all): "
                   + ",".join(peer.name for peer in PEERS))
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
    p.add_argument("--server-cpu", type=int,
                   default=cpus[1] if len(cpus) > 1 else None)
    p.add_argument("--client-cpu", type=int, default=cpus[0])
    args = p.parse_args()
    args.mode = args.mode or "quick"
    args.build_dir = os.path.join(ROOT, args.build_dir)
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
