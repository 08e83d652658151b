#!/usr/bin/env python3
"""Host-tax benchmark, run by bench/run.sh: what the whole-host observer costs workloads that are
not LLM calls.

Five loopback workloads, none of them an LLM call, each bounded in time:
  dd      file syscalls: dd if=/dev/zero of=/dev/null bs=64 count=2000000 (MB/s)
  http    wrk -t1 -c4 against nginx (`return 200`) over plaintext HTTP (requests/s)
  https   the same over TLS (requests/s)
  redis   redis-benchmark -c 4 -t set,get against redis-server (requests/s, mean of SET and GET)
  go-tls  a Go crypto/tls client and server in two processes, 1 KiB round trips (round trips/s)
run in interleaved rounds with no tracer, with the observer watching the whole host, and with
bcc's sslsniff. The servers (nginx, redis-server, the Go server) are started once, before the
rounds, so they already exist when a tracer starts; the clients (dd, wrk, redis-benchmark, the
Go client) are started fresh for every measurement. Servers and clients share vCPU 1, so the
tax on both ends of each connection is in the figure; the tracers' user space runs on vCPU 0
(bench.py's convention), as do this script, the mock LLM servers and the LLM calls below.

While each workload runs, four LLM calls are placed from fresh processes (curl and Python's
http.client, plaintext and TLS) against the repository's mock server; with the observer, each
must come out as a span. Writes a "Host tax" section into bench/RESULTS.md (replacing the
previous one, leaving the rest of the file alone) and its raw figures under "host_tax" in
bench/results.json.
"""
import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import (HERE, OWN_TRACERS, TRACER_CPU, WORKLOAD_CPU, Reader, Tracer, fmt_ratio, foreign_tracers,
                   log, median, proc_cpu_seconds, wait_for_quiet)

CONFIGS = ["none", "observer", "sslsniff"]
# This script, the mock LLM servers and the LLM calls run on vCPU 0 with the tracers' user space;
# workloads and their servers on vCPU 1.
OWN_CPU = {0}
WORKLOAD_VCPU = int(WORKLOAD_CPU[-1])
WORKLOADS = {
    # name: (description, figure's unit)
    "dd": ("file syscalls: `dd` 64-byte blocks /dev/zero → /dev/null (2,000,000 blocks)", "MB/s"),
    "http": ("plaintext HTTP: `wrk -t1 -c4` → nginx `return 200`", "requests/s"),
    "https": ("TLS HTTP: `wrk -t1 -c4` → nginx `listen ssl`, `return 200`", "requests/s"),
    "redis": ("redis: `redis-benchmark -c 4 -t set,get` → redis-server (mean of SET and GET)", "requests/s"),
    "go-tls": ("Go crypto/tls client ↔ server processes, 1 KiB request/response round trips", "round trips/s"),
}
TARGET_RATIO = 0.97
CANARY_API_KEY = "sk-canary-4f1d9a7e"  # the key the mock server accepts (tests/src/mock.rs)
LLM_MODEL = "gpt-4o-mini"
LLM_PATH = "/v1/chat/completions"
LLM_KINDS = ["curl-http", "curl-https", "python-http", "python-https"]
# An LLM call from Python's http.client (OpenSSL through the ssl module for https).
PYTHON_CALL = r"""
import http.client, json, os, ssl, sys
scheme, port, ca, prompt, model, path, key = sys.argv[1:]
if scheme == "https":
    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ssl.create_default_context(cafile=ca), timeout=30)
else:
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]})
conn.request("POST", path, body, {"content-type": "application/json", "authorization": "Bearer " + key})
response = conn.getresponse()
print(json.dumps({"pid": os.getpid(), "status": response.status, "body": response.read().decode()}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} is not listening on port {port}")


class Servers:
    """nginx (plaintext and TLS), redis-server, the Go TLS server on vCPU 1, and the two mock LLM
    servers (plaintext, TLS) on vCPU 0; all started once and stopped at the end."""

    def __init__(self, args, workdir, cert, key):
        self.procs = []
        self.workdir = workdir
        self.http_port, self.https_port = free_port(), free_port()
        conf = workdir / "nginx.conf"
        temp = workdir / "nginx-temp"
        temp.mkdir()
        temp_paths = "\n".join(f"    {kind}_temp_path {temp}/{kind};" for kind in
                               ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
        conf.write_text(f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}
    server {{
        listen 127.0.0.1:{self.http_port};
        location / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{self.https_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        self.nginx_cmd = [*WORKLOAD_CPU, "nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")]
        nginx = self.spawn(self.nginx_cmd)
        wait_for_port(self.http_port, nginx, "nginx")
        wait_for_port(self.https_port, nginx, "nginx (TLS)")

        self.redis_port = free_port()
        self.redis_cmd = [*WORKLOAD_CPU, "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(workdir),
                          "--logfile", str(workdir / "redis.log")]
        redis = self.spawn(self.redis_cmd)
        wait_for_port(self.redis_port, redis, "redis-server")

        self.go_port = None
        if args.go_pair:
            self.go_cmd = [*WORKLOAD_CPU, str(args.go_pair), "server", str(cert), str(key)]
            go = self.spawn(self.go_cmd, stdout=subprocess.PIPE)
            line = go.stdout.readline().decode()
            if not line.startswith("listening "):
                raise RuntimeError(f"Go TLS server: unexpected banner {line!r}")
            self.go_port = int(line.split()[1])

        self.mock = {}
        for scheme in ["http", "https"]:
            cert_dir = workdir / f"mock-{scheme}"
            cmd = [str(args.mock_server), "--cert-dir", str(cert_dir)] + (["--plain"] if scheme == "http" else [])
            proc = self.spawn(cmd, stdout=subprocess.PIPE)
            # listening 127.0.0.1:PORT cert=PATH, then one JSON line per request (drained).
            banner = proc.stdout.readline().decode()
            m = re.match(r"listening [\d.]+:(\d+) cert=(\S+)", banner)
            if not m:
                raise RuntimeError(f"mock server: unexpected banner {banner!r}")
            self.mock[scheme] = {"port": int(m.group(1)), "ca": m.group(2), "log": Reader(proc.stdout)}

    def spawn(self, cmd, stdout=subprocess.DEVNULL):
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_busy_seconds(cpu):
    """Non-idle time of one CPU since boot (/proc/stat), in seconds."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    return 0.0


def timed(cmd):
    """Runs a workload command; returns (stdout + stderr, wall seconds, CPU seconds of the process
    itself: user + system, from wait4)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {out[-1000:]}")
    return out, wall, usage.ru_utime + usage.ru_stime


def workload_commands(args, servers):
    seconds = f"{args.seconds:g}"
    cmds = {
        "dd": [*WORKLOAD_CPU, "dd", "if=/dev/zero", "of=/dev/null", "bs=64", f"count={args.dd_count}"],
        "http": [*WORKLOAD_CPU, "wrk", "-t1", "-c4", f"-d{seconds}s", f"http://127.0.0.1:{servers.http_port}/"],
        "https": [*WORKLOAD_CPU, "wrk", "-t1", "-c4", f"-d{seconds}s", f"https://127.0.0.1:{servers.https_port}/"],
        "redis": [*WORKLOAD_CPU, "redis-benchmark", "-h", "127.0.0.1", "-p", str(servers.redis_port), "-c", "4",
                  "-n", str(args.redis_requests), "-t", "set,get", "-q"],
    }
    if servers.go_port:
        cmds["go-tls"] = [*WORKLOAD_CPU, str(args.go_pair), "client", str(servers.go_port), seconds, "1024"]
    return {w: c for w, c in cmds.items() if w in args.workloads}


def parse(workload, out):
    """The workload's figure (throughput, higher is better) and what else its output says."""
    if workload == "dd":
        m = re.search(r"^(\d+) bytes .* copied, ([\d.]+) s", out, re.M)
        return {"value": int(m.group(1)) / float(m.group(2)) / 1e6, "seconds": float(m.group(2))}
    if workload in ("http", "https"):
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {"value": rps, "requests": requests, "socket_errors": errors.group(1) if errors else None,
                "non_2xx": int(non2xx.group(1)) if non2xx else 0}
    if workload == "redis":
        # -q prints "SET: 81234.56 requests per second, p50=0.031 msec" (after \r progress lines).
        rates = {op: float(r) for op, r in re.findall(r"(SET|GET): ([\d.]+) requests per second", out)}
        return {"value": (rates["SET"] + rates["GET"]) / 2, "set": rates["SET"], "get": rates["GET"]}
    if workload == "go-tls":
        line = json.loads(out.strip().splitlines()[-1])
        return {"value": line["round_trips_per_s"], "round_trips": line["round_trips"]}
    raise ValueError(workload)


def place_llm_call(kind, servers, prompt):
    """One chat completion from a fresh process (curl or Python http.client); returns what the
    client saw: its pid, the status and the response id."""
    scheme = kind.split("-")[1]
    mock = servers.mock[scheme]
    url = f"{scheme}://127.0.0.1:{mock['port']}{LLM_PATH}"
    body = json.dumps({"model": LLM_MODEL, "messages": [{"role": "user", "content": prompt}]})
    start = time.time()
    if kind.startswith("curl"):
        cmd = ["curl", "-s", "-S", "-X", "POST", url, "-H", "content-type: application/json",
               "-H", f"authorization: Bearer {CANARY_API_KEY}", "-d", body, "-w", "\n%{http_code}"]
        if scheme == "https":
            cmd[1:1] = ["--cacert", mock["ca"]]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(60)
        text, _, status = out.decode(errors="replace").rpartition("\n")
        pid, status = proc.pid, int(status or 0)
    else:
        proc = subprocess.Popen([sys.executable, "-c", PYTHON_CALL, scheme, str(mock["port"]), mock["ca"], prompt,
                                 LLM_MODEL, LLM_PATH, CANARY_API_KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(60)
        try:
            reply = json.loads(out)
            text, pid, status = reply["body"], reply["pid"], reply["status"]
        except (ValueError, KeyError):
            text, pid, status = "", proc.pid, 0
    try:
        response_id = json.loads(text).get("id")
    except ValueError:
        response_id = None
    return {"kind": kind, "pid": pid, "status": status, "response_id": response_id, "prompt": prompt,
            "start": start, "end": time.time(), "error": err.decode(errors="replace")[-300:] if status != 200 else ""}


class LlmCalls(threading.Thread):
    """Places the LLM calls while a workload runs (`delay` seconds after it starts)."""

    def __init__(self, servers, label, delay):
        super().__init__(daemon=True)
        self.servers, self.label, self.delay = servers, label, delay
        self.calls = []
        self.start()

    def run(self):
        time.sleep(self.delay)
        # All four at once, so that they fall inside even the shortest workload (dd, ~0.7 s here).
        threads = [threading.Thread(target=lambda k=kind: self.calls.append(
            place_llm_call(k, self.servers, f"host tax {self.label} {k}: say hi"))) for kind in LLM_KINDS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


SPAN_KEYS = ["kind", "process.pid", "gen_ai.response.id", "url.path", "gen_ai.request.model", "server.port",
             "observer.tls.library", "http.response.status_code"]


def match_calls(calls, spans):
    """Marks each placed call captured when a call span of its process carries its response id
    (or, without one, its path and model)."""
    used = set()
    for call in calls:
        call["captured"] = False
        for i, span in enumerate(spans):
            if i in used or span.get("kind") == "INTERNAL" or span.get("process.pid") != call["pid"]:
                continue
            if (span.get("gen_ai.response.id") == call["response_id"] if span.get("gen_ai.response.id")
                    else span.get("url.path") == LLM_PATH and span.get("gen_ai.request.model") == LLM_MODEL):
                used.add(i)
                call["captured"] = True
                call["span"] = {k: span.get(k) for k in SPAN_KEYS}
                break
    return [s for i, s in enumerate(spans) if i not in used and s.get("kind") != "INTERNAL"]


def bpf_links(pid):
    """What a process's BPF links attach to (from /proc/PID/fdinfo), e.g. "raw_tracepoint sock_send_length"."""
    found = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if "bpf_link" not in os.readlink(fd) and "bpf-link" not in os.readlink(fd):
                    continue
                info = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().splitlines() if ":" in l)
            except OSError:
                continue
            found.append(" ".join(info.get(k, "").strip() for k in ["link_type", "tp_name", "target_name"] if info.get(k)))
    except OSError:
        pass
    return found


def quiet():
    """bench.py's wait for no other uprobe/BPF-link holder, saying who is waited for."""
    if others := foreign_tracers():
        log(f"waiting for other tracers to go away: {others} (--ignore-tracer PID to measure anyway)")
    wait_for_quiet()


def measure(cmd, workload, tracer_pid, servers, label, llm_calls):
    """One measurement: waits until no other process holds uprobes, places the LLM calls from a
    thread while the workload runs, retries a run during which another tracer appeared."""
    placed = []
    for attempt in range(20):
        quiet()
        calls = LlmCalls(servers, label, 0.2) if llm_calls else None
        cpu_before = proc_cpu_seconds(tracer_pid) if tracer_pid else 0.0
        busy_before = cpu_busy_seconds(WORKLOAD_VCPU)
        started = time.time()
        out, wall, cpu = timed(cmd)
        ended = time.time()
        busy = cpu_busy_seconds(WORKLOAD_VCPU) - busy_before
        tracer_cpu = proc_cpu_seconds(tracer_pid) - cpu_before if tracer_pid else 0.0
        if calls:
            calls.join(120)
            for call in calls.calls:
                call["during_workload"] = call["end"] <= ended
            placed += calls.calls
        if not foreign_tracers():
            result = parse(workload, out)
            # Throughput per CPU second spent: the workload's vCPU (clients, servers, their probes)
            # plus the tracer's own process on the other vCPU.
            result["per_cpu_s"] = result["value"] * wall / max(busy + tracer_cpu, 1e-9)
            result.update(wall=wall, cpu=cpu, vcpu_busy=busy, tracer_cpu=tracer_cpu, attempts=attempt + 1, started=started, ended=ended)
            return result, placed
    raise RuntimeError("other tracers kept attaching: no quiet window for the measurement")


def run_rounds(args, servers, workdir):
    cmds = workload_commands(args, servers)
    results = {c: {w: [] for w in cmds} for c in CONFIGS}
    rounds = []
    # One unrecorded pass first: the servers' first connections, page cache, CPU frequency.
    log("host tax: warm-up pass (not recorded)")
    for cmd in cmds.values():
        timed(cmd)
    for round_no in range(args.rounds):
        # The order of the configurations turns by one each round, so that a drift of the machine
        # over a round (other load, caches, clocks) does not always favour the same column.
        for config in CONFIGS[round_no % 3:] + CONFIGS[:round_no % 3]:
            if config == "sslsniff" and args.no_sslsniff:
                continue
            tracer = Tracer(config, args.observer, workdir)
            pid = tracer.proc.pid if tracer.proc else None
            calls = []
            for workload, cmd in cmds.items():
                result, placed = measure(cmd, workload, pid, servers, f"r{round_no + 1} {config} {workload}",
                                         not args.no_llm_calls)
                results[config][workload].append(result)
                for call in placed:
                    call["workload"] = workload
                calls += placed
            lost, cpu = tracer.stop()
            entry = {"round": round_no + 1, "config": config, "lost": lost, "tracer_cpu": cpu, "calls": calls}
            if config == "observer":
                other = match_calls(calls, tracer.spans())
                entry["other_spans"] = len(other)
                entry["other_span_sample"] = [{k: s.get(k) for k in SPAN_KEYS} for s in other[:5]]
            rounds.append(entry)
            captured = sum(c.get("captured", False) for c in calls)
            log(f"round {round_no + 1}/{args.rounds} {config}: " +
                ", ".join(f"{w} {results[config][w][-1]['value']:.0f}" for w in cmds) +
                f"; tracer CPU {cpu:.2f}s, lost {lost}" +
                (f"; LLM calls placed {len(calls)}, captured {captured}" if config == "observer" else ""))
    return cmds, results, rounds


def machine_info():
    def version(cmd, pattern=None):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            text = (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
        m = re.search(pattern, text) if pattern else None
        return m.group(0) if m else text
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                     if l.startswith("model name")), "?"),
        "openssl": version(["openssl", "version"]),
        "nginx": version(["nginx", "-v"], r"nginx/\S+"),
        "redis": version(["redis-server", "--version"], r"v=\S+"),
        "wrk": version(["wrk", "-v"], r"wrk \S+"),
        "go": version(["go", "version"], r"go\d\S*") if shutil.which("go") else None,
    }


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


START, END = "<!-- host-tax: start -->", "<!-- host-tax: end -->"


def write_results(args, servers, cmds, results, rounds, machine, duration, path):
    configs = [c for c in CONFIGS if results[c] and all(results[c][w] for w in cmds)]
    value = {c: {w: median([r["value"] for r in results[c][w]]) for w in cmds} for c in configs}
    ratio = {c: {w: value[c][w] / value["none"][w] for w in cmds} for c in configs}
    per_cpu = {c: {w: median([r["per_cpu_s"] for r in results[c][w]]) for w in cmds} for c in configs}
    cpu_ratio = {c: {w: per_cpu[c][w] / per_cpu["none"][w] for w in cmds} for c in configs}
    observer_rounds = [r for r in rounds if r["config"] == "observer"]
    placed = [c for r in observer_rounds for c in r["calls"]]
    captured = [c for c in placed if c.get("captured")]
    o = [START, "## Host tax: non-LLM workloads under the whole-host observer\n"]
    o.append(f"Written by `bench/run.sh` (`bench/run.sh --host-tax-only` runs just this part) on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {plural(args.rounds, 'round')} in {duration / 60:.1f} min. "
             "Every figure in this section comes from that one run; the sections above may come from another run "
             "(see their date).\n")
    o.append("### Machine\n")
    o.append(f"- kernel {machine['kernel']}, {machine['cpus']} vCPUs ({machine['cpu']}), {machine['openssl']}, "
             f"{machine['nginx']}, redis {machine['redis']}, {machine['wrk']}" + (f", Go {machine['go']}" if machine['go'] else ""))
    o.append(f"- load average at the start of this part: {' / '.join(f'{x:.1f}' for x in machine['load_start'])}, "
             f"at its end: {' / '.join(f'{x:.1f}' for x in machine['load_end'])}")
    if machine["ignored_tracers"]:
        o.append("- **other BPF programs were attached during this run** and measured through (`--ignore-tracer`), "
                 "in every configuration including \"none\": " + "; ".join(
                     f"pid {t['pid']} `{t['comm']}` ({', '.join(t['links']) or 'no BPF links seen'})"
                     for t in machine["ignored_tracers"]))
    o.append("")
    o.append("### Commands\n")
    o.append("```")
    o.append("# servers, started once before the rounds and up for every configuration")
    o.append("taskset -c 1 nginx -p WORK -c nginx.conf   # worker_processes 1; access_log off; listen 127.0.0.1:P1 and "
             "127.0.0.1:P2 ssl (self-signed P-256 certificate); location / { return 200 \"ok\\n\"; }")
    o.append("taskset -c 1 redis-server --port P3 --bind 127.0.0.1 --save '' --appendonly no")
    if servers.go_port:
        o.append("taskset -c 1 go_tls_pair server cert.pem key.pem   # bench/go_tls_pair")
    o.append("llm-mock-server --plain --cert-dir D1; llm-mock-server --cert-dir D2   # tests/src/bin/llm-mock-server, vCPU 0")
    o.append("# tracers, one at a time")
    o.append("taskset -c 0 nice -n -10 observer capture -f jsonl -q -o SPANS   # the observer, whole host")
    o.append("taskset -c 0 nice -n -10 sslsniff-bpfcc                         # bcc's sslsniff, whole host")
    o.append("# workloads, each started fresh for every measurement")
    names = {servers.http_port: "P1", servers.https_port: "P2", servers.redis_port: "P3", servers.go_port: "P4"}
    for cmd in cmds.values():
        shown = []
        for x in map(str, cmd):
            x = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: "127.0.0.1:" + names.get(int(m.group(1)), m.group(1)), x)
            x = names.get(int(x), x) if x.isdigit() and int(x) in names else x
            shown.append("go_tls_pair" if x == str(args.go_pair) else x)
        o.append(" ".join(f"'{x}'" if x == "" else x for x in shown))
    o.append("# LLM calls placed during every workload (vCPU 0, fresh processes)")
    o.append(f"curl -s -X POST http://127.0.0.1:M1{LLM_PATH} -H 'content-type: application/json' "
             f"-H 'authorization: Bearer KEY' -d '{{\"model\":\"{LLM_MODEL}\",\"messages\":[{{\"role\":\"user\",\"content\":PROMPT}}]}}'")
    o.append(f"curl -s --cacert ca.pem -X POST https://127.0.0.1:M2{LLM_PATH} ...   # the same over TLS")
    o.append("python3 -c 'http.client.HTTP(S)Connection(...).request(\"POST\", ...)'   # the same from Python, plaintext and TLS")
    o.append("```\n")
    o.append(
        f"{plural(args.rounds, 'round')}; each round runs every workload with no tracer, with the observer watching the whole "
        "host (`observer capture` with no pid filter, started and waited for before its part, stopped after), and "
        "with sslsniff, in an order that turns by one each round (round 1: none, observer, sslsniff; round 2: "
        "observer, sslsniff, none; ...). The servers already exist when a tracer starts (found by its start-up scan, if it scans); the "
        "clients are new processes in every measurement. Clients and servers share vCPU 1, so the tax on both ends "
        "of a connection is in the figure (one unrecorded pass of every workload precedes the rounds); the tracers' user space, this script, the mock LLM servers and the LLM "
        "calls run on vCPU 0. As in the sections above, a measurement runs only while no other process holds uprobes "
        "or BPF links, and is repeated if one appeared. Figures are throughput (higher is better), the median over "
        "rounds; ratio = figure / no-tracer figure. nginx keeps its default `keepalive_requests` (1000): wrk "
        "reconnects every 1,000 requests, so connection set-up (and, over TLS, the handshake) is in the figure. "
        "The tracers' user space runs on the other vCPU, so its CPU is not in the throughput ratio (on a host whose "
        "CPUs are all busy it would be taken from the workloads too): the \"per CPU s\" ratios count it, comparing "
        "throughput per CPU second spent, that is the workload vCPU's busy time (`/proc/stat`: clients, servers and "
        "the probes that run in them) plus the tracer process's CPU time.\n")
    o.append("| workload | figure | none | observer | sslsniff | observer ratio | sslsniff ratio | observer ratio per CPU s | sslsniff ratio per CPU s |")
    o.append("|---|---|---|---|---|---|---|---|---|")
    cell = lambda c, w: f"{value[c][w]:,.0f}" if c in value else "-"
    rcell = lambda c, w: fmt_ratio(ratio[c][w]) if c in ratio else "-"
    ccell = lambda c, w: fmt_ratio(cpu_ratio[c][w]) if c in cpu_ratio else "-"
    for w in cmds:
        desc, unit = WORKLOADS[w]
        o.append(f"| {desc} | {unit} | {cell('none', w)} | {cell('observer', w)} | {cell('sslsniff', w)} | "
                 f"{rcell('observer', w)} | {rcell('sslsniff', w)} | {ccell('observer', w)} | {ccell('sslsniff', w)} |")
    o.append("")
    spread = {w: (max(r["value"] for r in results["none"][w]) - min(r["value"] for r in results["none"][w])) / value["none"][w]
              for w in cmds}
    o.append("Spread of the no-tracer figure over the rounds ((max − min) / median), a measure of this machine's noise "
             "against the 3 % the targets allow: " + ", ".join(f"{w} {100 * x:.1f} %" for w, x in spread.items()) + ".\n")
    o.append("Per round (none / observer / sslsniff):\n")
    o.append("| round | " + " | ".join(cmds) + " |")
    o.append("|---|" + "---|" * len(cmds))
    for i in range(args.rounds):
        cells = [" / ".join(f"{results[c][w][i]['value']:,.0f}" if i < len(results[c][w]) else "-" for c in CONFIGS)
                 for w in cmds]
        o.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    o.append("")
    o.append("### The observer's own cost, events lost, LLM calls captured\n")
    o.append("CPU seconds of the tracer process (user + system, `/proc/PID/stat`) from its start-up scan's end to its "
             "stop, and during each workload; events lost from its summary on exit. LLM calls: four per workload "
             f"({', '.join(LLM_KINDS)}; `{LLM_PATH}`, model `{LLM_MODEL}`, each prompt unique) placed from fresh "
             "processes against the mock server while the workload ran; a call is captured when the span file holds "
             "a call span with the client's pid and the response id the client received. \"Other spans\" are call "
             "spans matching no placed call (the workloads carry no LLM traffic, so 0 is expected).\n")
    o.append("| round | observer CPU s (its whole part) | " + " | ".join(f"CPU s during {w}" for w in cmds) +
             " | events lost | LLM calls placed / captured | other spans | sslsniff CPU s | sslsniff events lost |")
    o.append("|---|---|" + "---|" * len(cmds) + "---|---|---|---|---|")
    for i in range(args.rounds):
        obs = next((r for r in rounds if r["round"] == i + 1 and r["config"] == "observer"), None)
        sniff = next((r for r in rounds if r["round"] == i + 1 and r["config"] == "sslsniff"), None)
        if not obs:
            continue
        during = [f"{results['observer'][w][i]['tracer_cpu']:.2f}" for w in cmds]
        n_captured = sum(c.get("captured", False) for c in obs["calls"])
        o.append(f"| {i + 1} | {obs['tracer_cpu']:.2f} | " + " | ".join(during) + f" | {obs['lost']} | "
                 f"{len(obs['calls'])} / {n_captured} | {obs.get('other_spans', 0)} | "
                 + (f"{sniff['tracer_cpu']:.2f} | {sniff['lost']} |" if sniff else "- | - |"))
    missed = [c for c in placed if not c.get("captured")]
    if missed:
        o.append("")
        o.append("Calls not captured: " + "; ".join(
            f"{c['kind']} during {c['workload']} (pid {c['pid']}, status {c['status']}, response {c['response_id']})"
            for c in missed))
    late = [c for c in placed if not c.get("during_workload")]
    if late:
        o.append("")
        o.append(f"{len(late)} of the {len(placed)} calls ended after their workload (the workload was shorter than "
                 "the calls' start delay plus their duration).")
    o.append("")
    o.append("### Targets\n")
    o.append("| target | measured | met |")
    o.append("|---|---|---|")
    if "observer" in ratio:
        for w in cmds:
            r = ratio["observer"][w]
            extra = f" (sslsniff {fmt_ratio(ratio['sslsniff'][w])})" if "sslsniff" in ratio else ""
            o.append(f"| {w}: ≥ {TARGET_RATIO:.2f}× of no tracer with the whole-host observer | {fmt_ratio(r)}{extra} | "
                     f"{'yes' if r >= TARGET_RATIO else 'NO'} |")
    if not args.no_llm_calls:
        ok = len(captured) == len(placed) and bool(placed)
        o.append(f"| every LLM call placed during the workloads captured | placed {len(placed)}, captured {len(captured)} | "
                 f"{'yes' if ok else 'NO'} |")
    if not servers.go_port:
        o.append("")
        o.append("No Go toolchain on this machine (`apt-get install golang-go`): the Go crypto/tls workload was skipped.")
    o.append("")
    o.append(END)
    section = "\n".join(o) + "\n"

    text = path.read_text() if path.exists() else "# Overhead benchmark results\n\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        # Before the hand-written notes that bench.py appends, else at the end.
        notes = HERE / "NOTES.md"
        marker = notes.read_text().strip().splitlines()[0] if notes.exists() else None
        if marker and marker in text:
            at = text.index(marker)
            text = text[:at] + section + "\n" + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)

    raw_path = path.parent / "results.json"
    try:
        raw = json.loads(raw_path.read_text())
    except (OSError, ValueError):
        raw = {}
    raw["host_tax"] = {
        "machine": machine, "rounds": args.rounds, "duration_s": duration, "commands": {w: [str(x) for x in c] for w, c in cmds.items()},
        "median": value, "ratio": ratio, "per_cpu_s_median": per_cpu, "per_cpu_s_ratio": cpu_ratio, "none_spread": spread, "results": results, "per_round": rounds,
        "llm_calls": {"placed": len(placed), "captured": len(captured)},
    }
    raw_path.write_text(json.dumps(raw, indent=1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--observer", type=Path, required=True)
    p.add_argument("--mock-server", type=Path, required=True, help="llm-mock-server (tests/src/bin/llm-mock-server)")
    p.add_argument("--go-pair", type=Path, help="bench/go_tls_pair built; without it the Go workload is skipped")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5, help="duration of the wrk and Go runs")
    p.add_argument("--dd-count", type=int, default=2_000_000)
    p.add_argument("--redis-requests", type=int, default=150_000)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--no-sslsniff", action="store_true")
    p.add_argument("--no-llm-calls", action="store_true")
    p.add_argument("--ignore-tracer", type=int, action="append", default=[], metavar="PID",
                   help="measure although process PID holds uprobes or BPF links (named in the results)")
    p.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args()
    args.workloads = args.workloads.split(",")
    if unknown := set(args.workloads) - set(WORKLOADS):
        p.error(f"unknown workloads {sorted(unknown)}")
    if not args.go_pair and "go-tls" in args.workloads:
        log("no Go TLS pair (no Go toolchain?): skipping the go-tls workload")
    ignored = []
    for pid in args.ignore_tracer:
        OWN_TRACERS.add(pid)
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        ignored.append({"pid": pid, "comm": comm, "links": bpf_links(pid)})
    os.sched_setaffinity(0, OWN_CPU)
    started = time.monotonic()
    machine = machine_info()
    machine["load_start"] = os.getloadavg()
    machine["ignored_tracers"] = ignored
    with tempfile.TemporaryDirectory(prefix="observer-host-tax-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # nginx's worker (user nobody) reads under it
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
        servers = Servers(args, workdir, cert, key)
        try:
            log(f"host tax: {args.rounds} rounds of {', '.join(workload_commands(args, servers))} ...")
            cmds, results, rounds = run_rounds(args, servers, workdir)
        finally:
            servers.stop()
        machine["load_end"] = os.getloadavg()
        write_results(args, servers, cmds, results, rounds, machine, time.monotonic() - started, args.output)
    log(f"wrote the host-tax section of {args.output}")


if __name__ == "__main__":
    main()
