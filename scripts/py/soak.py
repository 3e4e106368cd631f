"""Soak: many `peer` processes, mixed traffic, random kill -9 and restart; run by
scripts/soak.sh (not in CI).

--hosts hosts listen on 127.0.0.1; host i requires every host j < i, so each pair
is kept connected by one side and the hosts form a full mesh. Every --tick-secs,
every live host floods every peer with --small-count messages of --small-size
bytes, and one random host floods every peer with --large-count messages of
--large-size bytes. Every --kill-min-secs..--kill-max-secs one random host that is
not a survivor (the first --survivors hosts are never killed) is killed with
SIGKILL and restarted, same key and port, after --down-min-secs..--down-max-secs.

Every --sample-secs each live host is sampled: RSS and open files from /proc, and
its `stats` line (tasks, connections, pool and inbound streams, messages
received); one CSV row per host and sample goes to <out>/soak-samples.csv.

Growth rule, per survivor and metric (rss_kib, fds, tasks, pool_streams,
inbound_streams), on the samples after --warmup-secs split into thirds: FAIL if
the median of the last third exceeds the maximum of the first third by more than
20 % plus a fixed slack (RSS 8 MiB, fds 8, tasks 32, streams 40). Survivors are
the processes that live through the whole run while the others die around them,
so a leak shows there. At the end, traffic and kills stop, every host is back and
connected to all others, and at rest: no stream borrowed, no waiter, and for every
pair A, B the pooled streams A keeps to B equal the inbound streams B tracks from
A (the mirror check).
"""

import argparse
import csv
import datetime
import json
import os
import random
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerproc import PeerProc, Timeout, mirror_mismatches  # noqa: E402

PROTOCOL = "/liquid/chat/1"
METRICS = {"rss_kib": 8192, "fds": 8, "tasks": 32, "pool_streams": 40, "inbound_streams": 40}
COLUMNS = ["t_secs", "host", "instance", "pid", "rss_kib", "fds", "tasks", "connected_peers", "connections",
           "pool_streams", "pool_borrowed", "pool_waiters", "inbound_streams", "received_messages",
           "received_bytes"]


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.hosts = [None] * args.hosts  # current PeerProc or None while down
        self.host_args = [None] * args.hosts
        self.ids = [None] * args.hosts
        self.instances = [[] for _ in range(args.hosts)]  # every PeerProc ever, per host
        self.last_received = {}  # PeerProc -> received_messages at its last sample
        self.flood = {"sent_ok": 0, "failed": 0, "floods": 0}
        self.kills = []  # (t, host)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def on_line(self, _t, obj):
        if obj.get("event") == "flood_done":
            with self.lock:
                self.flood["sent_ok"] += obj["sent_ok"]
                self.flood["failed"] += obj["failed"]
                self.flood["floods"] += 1

    def start_host(self, i):
        peer = PeerProc(self.args.peer, self.host_args[i], f"h{i:02}", self.args.out,
                        keep=lambda o: o.get("event") not in ("flood_done", "message"),
                        on_line=self.on_line)
        address, peer_id = peer.listening()
        with self.lock:
            self.hosts[i] = peer
            self.instances[i].append(peer)
        return address, peer_id

    def start_all(self):
        a = self.args
        flags = ["--quiet-messages", "--max-backoff-ms", str(a.max_backoff_ms),
                 "--check-interval-ms", str(a.check_interval_ms)]
        addresses = []
        for i in range(a.hosts):
            key = os.path.join(a.out, f"h{i:02}.key")
            required = [x for address in addresses for x in ("--required", address)]
            self.host_args[i] = ["--listen", f"/ip4/127.0.0.1/tcp/{a.base_port + i}", "--key-file", key] \
                + flags + required
            address, peer_id = self.start_host(i)
            addresses.append(address)
            self.ids[i] = peer_id

    def live(self):
        with self.lock:
            return [(i, p) for i, p in enumerate(self.hosts) if p is not None]

    def traffic(self):
        a = self.args
        while not self.stop.wait(a.tick_secs):
            live = self.live()
            for _, peer in live:
                peer.command(f"flood * {PROTOCOL} {a.small_count} {a.small_size}")
            if live:
                _, peer = self.rng.choice(live)
                peer.command(f"flood * {PROTOCOL} {a.large_count} {a.large_size}")

    def chaos(self):
        a = self.args
        while not self.stop.wait(self.rng.uniform(a.kill_min_secs, a.kill_max_secs)):
            candidates = [i for i, _ in self.live() if i >= a.survivors]
            if not candidates:
                continue
            i = self.rng.choice(candidates)
            with self.lock:
                peer = self.hosts[i]
                self.hosts[i] = None
            peer.kill9()
            self.kills.append((round(time.monotonic() - self.t0, 1), i))
            self.stop.wait(self.rng.uniform(a.down_min_secs, a.down_max_secs))
            try:
                self.start_host(i)
            except Timeout as e:
                print(f"restart of h{i:02} failed: {e}", flush=True)

    def sample(self, writer):
        t = round(time.monotonic() - self.t0, 1)
        rows = []
        for i, peer in self.live():
            try:
                stats = peer.stats(timeout=5)
            except Timeout:
                continue  # killed meanwhile
            row = {"t_secs": t, "host": i, "instance": len(self.instances[i]), "pid": peer.pid,
                   "rss_kib": peer.rss_kib(), "fds": peer.open_fds()}
            for k in COLUMNS:
                if k in stats:
                    row[k] = stats[k]
            self.last_received[peer] = stats["received_messages"]
            writer.writerow(row)
            rows.append(row)
        return rows

    def finish(self, threads):
        """Stops traffic and kills, brings every host back, and checks the mesh at rest."""
        self.stop.set()
        # The chaos thread restarts the host it killed before it returns; only then
        # may hosts still down be started here (never two processes for one host).
        for thread in threads:
            thread.join(timeout=120)
            if thread.is_alive():
                raise RuntimeError(f"{thread.name} did not stop")
        for i in range(self.args.hosts):
            with self.lock:
                down = self.hosts[i] is None
            if down:
                self.start_host(i)
        problems = []
        everyone = self.args.hosts - 1
        deadline = time.monotonic() + self.args.final_timeout
        while True:
            time.sleep(2.0)
            stats = {self.ids[i]: p.stats() for i, p in self.live()}
            full = all(s["connected_peers"] == everyone for s in stats.values())
            busy = [s for s in stats.values() if s["pool_borrowed"] or s["pool_waiters"] or s["pool_opening"]]
            mirror = mirror_mismatches(stats)
            if full and not busy and not mirror:
                break
            if time.monotonic() > deadline:
                if not full:
                    counts = sorted(s["connected_peers"] for s in stats.values())
                    problems.append(f"mesh not whole at the end: connected peers per host {counts}")
                if busy:
                    problems.append(f"{len(busy)} hosts still have borrowed/waiting/opening streams at rest")
                if mirror:
                    problems.append(f"{len(mirror)} pairs whose pooled and inbound streams differ: {mirror[:5]}")
                break
        return problems, stats


def judge(rows, survivors, warmup):
    """Applies the growth rule; returns (problems, figures per survivor)."""
    problems, figures = [], {}
    for host in range(survivors):
        samples = [r for r in rows if r["host"] == host and r["t_secs"] >= warmup]
        if len(samples) < 6:
            problems.append(f"h{host:02}: only {len(samples)} samples after warm-up; need 6")
            continue
        third = len(samples) // 3
        first, last = samples[:third], samples[-third:]
        figures[f"h{host:02}"] = per = {}
        for metric, slack in METRICS.items():
            early = [r[metric] for r in first if r.get(metric) is not None]
            late = [r[metric] for r in last if r.get(metric) is not None]
            if not early or not late:
                problems.append(f"h{host:02} {metric}: no values")
                continue
            limit = max(early) * 1.2 + slack
            late_median = statistics.median(late)
            per[metric] = {"first_third_max": max(early), "last_third_median": late_median,
                           "limit": round(limit, 1), "overall_max": max(r[metric] for r in samples)}
            if late_median > limit:
                problems.append(f"h{host:02} {metric} grows: last-third median {late_median} > limit {limit:.0f}")
    return problems, figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--survivors", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup-secs", type=float, default=60)
    parser.add_argument("--sample-secs", type=float, default=10)
    parser.add_argument("--tick-secs", type=float, default=1.0)
    parser.add_argument("--small-count", type=int, default=10)
    parser.add_argument("--small-size", type=int, default=512)
    parser.add_argument("--large-count", type=int, default=2)
    parser.add_argument("--large-size", type=int, default=262144)
    parser.add_argument("--kill-min-secs", type=float, default=10)
    parser.add_argument("--kill-max-secs", type=float, default=30)
    parser.add_argument("--down-min-secs", type=float, default=1)
    parser.add_argument("--down-max-secs", type=float, default=3)
    parser.add_argument("--max-backoff-ms", type=int, default=5000)
    parser.add_argument("--check-interval-ms", type=int, default=1000)
    parser.add_argument("--final-timeout", type=float, default=60)
    parser.add_argument("--base-port", type=int, default=4600)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if not 1 <= args.survivors <= args.hosts:
        sys.exit("--survivors must be between 1 and --hosts")
    os.makedirs(args.out, exist_ok=True)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    soak = Soak(args)
    rows = []
    problems = []
    result = {"date": started, "peer": args.peer, "settings": vars(args)}
    try:
        soak.start_all()
        print(f"{args.hosts} hosts started; running {args.seconds:.0f} s", flush=True)
        threads = [threading.Thread(target=soak.traffic, name="traffic", daemon=True),
                   threading.Thread(target=soak.chaos, name="chaos", daemon=True)]
        for thread in threads:
            thread.start()
        with open(os.path.join(args.out, "soak-samples.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            next_sample = soak.t0
            while time.monotonic() - soak.t0 < args.seconds:
                time.sleep(max(0.0, next_sample - time.monotonic()))
                next_sample += args.sample_secs
                new = soak.sample(writer)
                f.flush()
                rows.extend(new)
                survivors = [r for r in new if r["host"] < args.survivors]
                print(f"t={new[0]['t_secs'] if new else '?'} s live={len(new)} kills={len(soak.kills)} "
                      f"survivor rss_kib={[r['rss_kib'] for r in survivors]} "
                      f"tasks={[r.get('tasks') for r in survivors]} "
                      f"pool={[r.get('pool_streams') for r in survivors]} "
                      f"inbound={[r.get('inbound_streams') for r in survivors]}", flush=True)
        final_problems, final_stats = soak.finish(threads)
        growth_problems, growth = judge(rows, args.survivors, args.warmup_secs)
        problems = growth_problems + final_problems
        received = sum(soak.last_received.values())
        result.update({
            "kills": len(soak.kills), "kill_times": soak.kills,
            "samples": len(rows),
            "floods": soak.flood, "received_messages_sampled": received,
            "survivors": growth,
            "at_rest": {soak.ids.index(pid): {k: s[k] for k in ("connected_peers", "pool_streams",
                                                                  "inbound_streams", "tasks")}
                        for pid, s in final_stats.items()},
        })
    except (Timeout, RuntimeError, OSError, KeyError, ValueError) as e:
        problems.append(f"aborted: {e}")
    finally:
        for instances in soak.instances:
            for peer in instances:
                try:
                    peer.quit(timeout=5)
                except Exception:  # noqa: BLE001 - cleanup goes on
                    pass
        result["problems"] = problems
        result["verdict"] = "FAIL" if problems else "PASS"
        with open(os.path.join(args.out, "soak-results.json"), "w") as f:
            json.dump(result, f, indent=2)
    for p in problems:
        print(f"    {p}")
    print(f"{result['verdict']} soak: {len(rows)} samples, {result.get('kills', 0)} kills; "
          f"results: {os.path.join(args.out, 'soak-results.json')}, samples: "
          f"{os.path.join(args.out, 'soak-samples.csv')}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
