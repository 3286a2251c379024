#!/usr/bin/env python3
"""What an idle platform costs Redis: ops/bench/idle's measurement (see ops/bench/README.md).

For each scenario it starts the api, the worker(s) and the scheduler against a private
redis-server and a fresh database, lets them settle, resets Redis' counters and counts every
command for the window twice:
- INFO commandstats: the server's own count, per command (commands run inside Lua scripts
  and MULTI blocks included, as a metered Redis counts them);
- MONITOR: the same commands with the connection that sent them, mapped to the process
  (ss -tnp: local port -> pid) and so to the process kind; a script's inner commands are
  charged to the client whose EVAL/EVALSHA ran them.
Both are extrapolated to a day. After the window it counts what one Prometheus scrape of
every worker's /metrics and one admin queue view cost (stats are read when asked).

Scenarios: base (1 worker, the registered kinds), queues (the same plus --extra-queues
throwaway queues: the cost of one queue more), workers (--many workers).
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

DAY = 86400
# our own connections' commands (INFO, MONITOR, CONFIG RESETSTAT, FLUSHALL), never the platform's
OWN = {"info", "monitor", "config|resetstat", "flushall", "echo"}
CONTAINERS = {"client", "config", "script", "command", "cluster", "object", "memory",
              "xinfo", "function", "acl", "module", "pubsub", "latency", "slowlog"}


def say(msg):
    print(f"[ops/bench/idle {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Resp:
    """A minimal RESP2 client: enough for INFO, CONFIG, FLUSHALL and MONITOR."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def commandstats(port, conn=None):
    own = conn is None
    conn = conn or Resp(port)
    try:
        info = conn.command("INFO", "commandstats")
    finally:
        if own:
            conn.close()
    stats = {}
    for line in info.splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m and m.group(1) not in OWN:
            stats[m.group(1)] = int(m.group(2))
    return stats


def reset(port, conn=None):
    own = conn is None
    conn = conn or Resp(port)
    try:
        conn.command("CONFIG", "RESETSTAT")
    finally:
        if own:
            conn.close()


def command_name(tokens):
    name = tokens[0].lower() if tokens else "?"
    if name in CONTAINERS and len(tokens) > 1:
        name = f"{name}|{tokens[1].lower()}"
    return name


class Monitor(threading.Thread):
    """Counts MONITOR lines per (process kind, command)."""

    LINE = re.compile(r'^\+?(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$')

    def __init__(self, port, kinds, control):
        super().__init__(daemon=True)
        self.port, self.kinds = port, kinds  # kinds: pid -> kind
        self.counts = Counter()
        # our control connection opens and closes the window
        host, local = control.sock.getsockname()[:2]
        self.addr_kind = {f"{host}:{local}": "bench"}
        self.last_client = None
        # counting runs from our CONFIG RESETSTAT to our INFO, exactly the server's window
        self.counting = False
        self.window_closed = threading.Event()
        self.stopped = threading.Event()
        self.conn = Resp(port)
        self.conn.command("MONITOR")

    def kind_of(self, addr):
        if addr not in self.addr_kind:
            self.refresh()
        return self.addr_kind.get(addr, "unknown")

    def refresh(self):
        out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 5 or not parts[4].endswith(f":{self.port}"):
                continue
            local = parts[3]
            m = re.search(r"pid=(\d+)", line)
            pid = int(m.group(1)) if m else None
            self.addr_kind[local] = self.kinds.get(pid, "bench" if pid == os.getpid() else "unknown")

    def run(self):
        while not self.stopped.is_set():
            try:
                line = self.conn.file.readline()
            except (OSError, ValueError):
                return
            if not line:
                return
            m = self.LINE.match(line.decode(errors="replace").rstrip("\r\n"))
            if not m:
                continue
            client, rest = m.group(2), m.group(3)
            tokens = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
            if client == "lua":
                kind = self.last_client or "unknown"
            else:
                kind = self.kind_of(client)
                self.last_client = kind
            name = command_name(tokens)
            if kind == "bench":
                # MONITOR does not show CONFIG or INFO: ECHOs right after the one and right
                # before the other mark the window
                if name == "echo" and tokens[1:] == ["idle-window-open"]:
                    self.counting = True
                elif name == "echo" and tokens[1:] == ["idle-window-close"]:
                    self.counting = False
                    self.window_closed.set()
            elif self.counting and name not in OWN:
                self.counts[(kind, name)] += 1

    def stop(self):
        self.stopped.set()
        self.conn.close()


class Platform:
    """The processes of one scenario."""

    def __init__(self, bins, env, logs):
        self.bins, self.env, self.logs = bins, env, logs
        self.procs = []  # (kind, name, Popen, port)

    def start(self, kind, name, args, port_var):
        port = free_port()
        env = dict(self.env, **{port_var: str(port), "SCHEDULER_INSTANCE": name})
        log = open(os.path.join(self.logs, f"{name}.log"), "wb")
        proc = subprocess.Popen([os.path.join(self.bins, kind)] + args, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((kind, name, proc, port))
        return port

    def wait_listening(self, timeout=60):
        deadline = time.time() + timeout
        for kind, name, proc, port in self.procs:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited early; see {self.logs}/{name}.log")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit(f"{name} is not listening on {port}")
                    time.sleep(0.2)

    def kinds(self):
        return {proc.pid: kind for kind, _, proc, _ in self.procs}

    def ports(self, kind):
        return [port for k, _, _, port in self.procs if k == kind]

    def stop(self):
        for _, _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 30
        for _, _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for attempt in range(5):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            # a 503 while Postgres is busy (the machine is shared): try again
            if e.code != 503 or attempt == 4:
                raise
            time.sleep(1)


def run_scenario(args, name, workers, extra_queues, redis_port, db_url, logs):
    prefix = f"idle{name}{int(time.time())}"
    env = dict(os.environ,
               DATABASE_URL=db_url,
               REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               QUEUE_PREFIX=prefix,
               BENCH_EXTRA_QUEUES=str(extra_queues),
               # ten workers on a Postgres shared with other work: keep the pools small
               DATABASE_POOL_SIZE="2",
               RUST_LOG=os.environ.get("RUST_LOG", "warn"),
               MAIL_DIR=os.path.join(logs, "mail"))
    platform = Platform(args.bin_dir, env, logs)
    say(f"scenario {name}: {workers} worker(s), {extra_queues} extra queue(s), prefix {prefix}")
    try:
        api_port = platform.start("api", f"{name}-api", [], "PORT")
        for n in range(workers):
            platform.start("worker", f"{name}-worker-{n}", [], "WORKER_PORT")
        platform.start("scheduler", f"{name}-scheduler", ["run"], "SCHEDULER_PORT")
        platform.wait_listening()
        say(f"settling for {args.settle} s")
        time.sleep(args.settle)
        dead = [n for _, n, p, _ in platform.procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"exited while settling: {dead}; logs in {logs}")

        control = Resp(redis_port)
        monitor = Monitor(redis_port, platform.kinds(), control)
        monitor.start()
        reset(redis_port, control)
        control.command("ECHO", "idle-window-open")
        started = time.time()
        say(f"counting for {args.seconds} s")
        time.sleep(args.seconds)
        control.command("ECHO", "idle-window-close")
        server = commandstats(redis_port, control)
        window = time.time() - started
        monitor.window_closed.wait(timeout=10)
        monitor.stop()
        control.close()
        dead = [n for _, n, p, _ in platform.procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"exited during the window: {dead}; logs in {logs}")

        # what asking costs: one scrape of every worker's /metrics, one admin queue view
        scrape = admin = None
        try:
            reset(redis_port)
            for port in platform.ports("worker"):
                http_get(f"http://127.0.0.1:{port}/metrics")
            time.sleep(0.5)
            scrape = sum(commandstats(redis_port).values())
            token = subprocess.run([os.path.join(args.bin_dir, "api"), "mint-token", "--email",
                                    "admin@example.com"], env=dict(env, RUST_LOG="error"),
                                   capture_output=True, text=True, check=True).stdout.strip()
            token = token.splitlines()[-1]
            reset(redis_port)
            http_get(f"http://127.0.0.1:{api_port}/api/v1/admin/queues", token)
            time.sleep(0.5)
            admin = sum(commandstats(redis_port).values())
        except Exception as e:  # the window's counts stand without these
            say(f"could not measure the on-demand reads: {e}")
    finally:
        platform.stop()
        try:
            conn = Resp(redis_port)
            conn.command("FLUSHALL")
            conn.close()
        except OSError:
            pass
    by_kind = Counter()
    for (kind, _), n in monitor.counts.items():
        by_kind[kind] += n
    return {
        "scenario": name,
        "workers": workers,
        "extra_queues": extra_queues,
        "window_s": window,
        "server": server,
        "by_kind": dict(by_kind),
        "by_kind_command": {f"{k}:{c}": n for (k, c), n in monitor.counts.items()},
        "per_scrape": scrape,
        "per_admin_view": admin,
    }


def per_day(n, window):
    return n * DAY / window


def table(result, queues):
    w = result["window_s"]
    lines = []
    total = sum(result["server"].values())
    lines.append(f"## {result['scenario']}: {result['workers']} worker(s), "
                 f"{queues + result['extra_queues']} queues ({queues} registered kinds + "
                 f"{result['extra_queues']} extra), {w:.0f} s window")
    lines.append("")
    kinds = sorted({k.split(":", 1)[0] for k in result["by_kind_command"]})
    head = "| command | calls | per day | " + " | ".join(f"{k}/day" for k in kinds) + " |"
    lines.append(head)
    lines.append("|" + "---|" * (3 + len(kinds)))
    for cmd, n in sorted(result["server"].items(), key=lambda kv: -kv[1]):
        cells = [f"{per_day(result['by_kind_command'].get(f'{k}:{cmd}', 0), w):,.0f}"
                 for k in kinds]
        lines.append(f"| {cmd} | {n:,} | {per_day(n, w):,.0f} | " + " | ".join(cells) + " |")
    cells = [f"**{per_day(result['by_kind'].get(k, 0), w):,.0f}**" for k in kinds]
    lines.append(f"| **total** | {total:,} | **{per_day(total, w):,.0f}** | "
                 + " | ".join(cells) + " |")
    lines.append("")
    attributed = sum(result["by_kind"].values())
    if attributed != total:
        lines.append(f"(MONITOR attributed {attributed:,} of the server's {total:,} commands)")
    if not kinds:
        kinds = []
    lines.append(f"on demand: one scrape of every worker's /metrics = {result['per_scrape']} "
                 f"commands; one admin queue view = {result['per_admin_view']} commands "
                 f"(over 0.5 s, so background traffic included)")
    lines.append("")
    return "\n".join(lines)


def main():
    # stopped by a signal (even as a background job, where SIGINT is ignored): clean up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("IDLE_SECONDS", 600)))
    ap.add_argument("--settle", type=float, default=float(os.environ.get("IDLE_SETTLE", 30)))
    ap.add_argument("--scenarios", default="base,queues,workers")
    ap.add_argument("--extra-queues", type=int, default=10)
    ap.add_argument("--many", type=int, default=10, help="workers in the 'workers' scenario")
    ap.add_argument("--label", default="")
    ap.add_argument("--admin-url", default=os.environ.get(
        "IDLE_DATABASE_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--out", default="", help="write the JSON results here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="idle-bench-")
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", work],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = f"idle_bench_{os.getpid()}_{int(time.time())}"
    base = args.admin_url.rsplit("/", 1)[0]
    db_url = f"{base}/{db}"
    results = []
    registered = 0
    try:
        for _ in range(50):
            try:
                Resp(redis_port).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(["psql", args.admin_url, "-qc", f"create database {db}"], check=True)
        # migrations and the demo users (the admin view needs an admin)
        subprocess.run([os.path.join(args.bin_dir, "api"), "seed"], check=True,
                       env=dict(os.environ, DATABASE_URL=db_url, RUST_LOG="warn"),
                       stdout=subprocess.DEVNULL)
        say(f"private redis on {redis_port}, database {db}, logs in {work}")
        plan = {"base": (1, 0), "queues": (1, args.extra_queues), "workers": (args.many, 0)}
        for name in args.scenarios.split(","):
            workers, extra = plan[name]
            results.append(run_scenario(args, name, workers, extra, redis_port, db_url, work))
            # the kinds the worker registered (published to job_queues), throwaway ones aside
            registered = int(subprocess.run(
                ["psql", db_url, "-tAc",
                 "select count(distinct queue) from job_queues where queue not like 'bench_extra_%'"],
                capture_output=True, text=True, check=True).stdout.strip())
            print(table(results[-1], registered), file=sys.stderr, flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"label": args.label, "results": results}, f, indent=1)
    finally:
        redis.terminate()
        redis.wait()
        subprocess.run(["psql", args.admin_url, "-qc", f"drop database if exists {db}"])

    title = f"# Idle Redis commands{(' (' + args.label + ')') if args.label else ''}"
    print(title)
    print()
    for result in results:
        print(table(result, registered))
    summary = {r["scenario"]: per_day(sum(r["server"].values()), r["window_s"]) for r in results}
    print("| scenario | commands per day |")
    print("|---|---|")
    for name, n in summary.items():
        print(f"| {name} | {n:,.0f} |")
    if "base" in summary and "queues" in summary and args.extra_queues:
        print(f"| per queue added ((queues - base) / {args.extra_queues}) | "
              f"{(summary['queues'] - summary['base']) / args.extra_queues:,.0f} |")
    if "base" in summary and "workers" in summary and args.many > 1:
        print(f"| per worker added ((workers - base) / {args.many - 1}) | "
              f"{(summary['workers'] - summary['base']) / (args.many - 1):,.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"label": args.label, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
