"""Faults with real processes and links; run by scripts/chaos.sh (as root).

Two network namespaces, `<prefix>-a` and `<prefix>-b`, joined by a veth pair
(10.77.1.1 and 10.77.1.2). Three checks, each with fresh `peer` processes:

link-down  A requires B. A's end of the veth goes down for --down-secs, then up.
           Checked: A reports B disconnected while the link is down, and A is
           connected to B again within max_backoff + check_interval (the `peer`
           flags --max-backoff-ms / --check-interval-ms) after the link returns.
loss       5 % packet loss and 50 ms delay each way (`tc netem` on both veth
           ends; where the kernel has no netem, a user-space link through two TUN
           devices, see linkemu.py). A and B flood each other at once, --count
           messages of --size bytes and, in parallel, --large-count of
           --large-size bytes (on the protocol --large-protocol, with the send
           priority --large-priority, when given; else on the small flood's).
           Checked:
           every message whose `send` returned Ok arrives exactly once. Reported:
           the rate achieved.
kill       A requires B. --cycles times: both flood each other, B is killed with
           SIGKILL mid-traffic and restarted with the same key and port. Checked:
           A sees the death and reconnects every time (within max_backoff +
           check_interval of B listening again); afterwards, at rest, A's
           connections, pool streams, inbound streams, tasks and open files are
           back to the baseline taken before the first kill, and every pooled
           stream of one host is an inbound stream at the other (mirror check).

TCP congestion control is the system's unless --congestion-control names one
allowed in a namespace (net.ipv4.tcp_allowed_congestion_control); the loss check
records which one ran, since it decides the rate (bbr keeps its rate under random
loss, reno does not).

Prints PASS/FAIL per check and writes every figure to <out>/chaos-results.json;
each peer's output lines (but `message`) go to <out>/<name>.stdout, stamped with
the wall-clock time, and its logs to <out>/<name>.stderr.
"""

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerproc import PeerProc, Timeout, mirror_mismatches  # noqa: E402

PROTOCOL = "/liquid/chat/1"


def sh(*cmd, check=True):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


class Lab:
    """The namespaces and links; `close` removes everything it made."""

    def __init__(self, prefix, out):
        self.ns_a = f"{prefix}-a"
        self.ns_b = f"{prefix}-b"
        self.veth_a = f"{prefix}-va"[-15:]
        self.veth_b = f"{prefix}-vb"[-15:]
        self.tun_a = f"{prefix}-ta"[-15:]
        self.tun_b = f"{prefix}-tb"[-15:]
        self.out = out
        self.emulator = None
        self.peers = []
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
        sh("ip", "link", "set", self.veth_a, "netns", self.ns_a)
        sh("ip", "link", "set", self.veth_b, "netns", self.ns_b)
        sh("ip", "-n", self.ns_a, "addr", "add", "10.77.1.1/24", "dev", self.veth_a)
        sh("ip", "-n", self.ns_b, "addr", "add", "10.77.1.2/24", "dev", self.veth_b)
        sh("ip", "-n", self.ns_a, "link", "set", self.veth_a, "up")
        sh("ip", "-n", self.ns_b, "link", "set", self.veth_b, "up")

    def congestion_control(self, algorithm=None):
        """Sets (if given) and returns the TCP congestion control of both namespaces."""
        key = "/proc/sys/net/ipv4/tcp_congestion_control"
        if algorithm:
            for ns in (self.ns_a, self.ns_b):
                sh("ip", "netns", "exec", ns, "sh", "-c", f"echo {algorithm} > {key}")
        return sh("ip", "netns", "exec", self.ns_a, "cat", key).stdout.strip()

    def start(self, side, binary, args, name):
        ns = self.ns_a if side == "a" else self.ns_b
        peer = PeerProc(binary, args, name, self.out, netns=ns, log_skip=("message",))
        self.peers.append(peer)
        return peer

    def impair(self, delay_ms, loss_percent):
        """Impairs a link and returns (how, address of A, address of B)."""
        netem = ["netem", "delay", f"{delay_ms}ms", "loss", f"{loss_percent}%"]
        first = sh("ip", "netns", "exec", self.ns_a, "tc", "qdisc", "add", "dev", self.veth_a, "root", *netem, check=False)
        if first.returncode == 0:
            sh("ip", "netns", "exec", self.ns_b, "tc", "qdisc", "add", "dev", self.veth_b, "root", *netem)
            return "tc netem on both veth ends", "10.77.1.1", "10.77.1.2"
        print(f"  tc netem unavailable ({first.stderr.strip()}); using the user-space link emulator over TUN")
        for ns, dev, address in ((self.ns_a, self.tun_a, "10.77.2.1/24"), (self.ns_b, self.tun_b, "10.77.2.2/24")):
            sh("ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tun")
            sh("ip", "-n", ns, "addr", "add", address, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        here = os.path.dirname(os.path.abspath(__file__))
        self.emulator = subprocess.Popen(
            [sys.executable, os.path.join(here, "linkemu.py"), "--ns-a", self.ns_a, "--dev-a", self.tun_a,
             "--ns-b", self.ns_b, "--dev-b", self.tun_b, "--delay-ms", str(delay_ms),
             "--loss-percent", str(loss_percent)],
            stdout=subprocess.PIPE, text=True)
        ready = self.emulator.stdout.readline()
        if '"ready"' not in ready:
            raise RuntimeError(f"link emulator did not start: {ready!r}")
        return "user-space emulator (linkemu.py, TUN pair; kernel without sch_netem)", "10.77.2.1", "10.77.2.2"

    def unimpair(self):
        counters = None
        if self.emulator is not None:
            self.emulator.terminate()
            try:
                out, _ = self.emulator.communicate(timeout=10)
                for line in out.splitlines():
                    if '"counters"' in line:
                        counters = json.loads(line)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
            self.emulator = None
        else:
            sh("ip", "netns", "exec", self.ns_a, "tc", "qdisc", "del", "dev", self.veth_a, "root", check=False)
            sh("ip", "netns", "exec", self.ns_b, "tc", "qdisc", "del", "dev", self.veth_b, "root", check=False)
        return counters

    def stop_peers(self):
        for peer in self.peers:
            try:
                peer.quit(timeout=5)
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        self.peers = []

    def close(self):
        self.stop_peers()
        if self.emulator is not None:
            self.emulator.kill()
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "del", ns, check=False)


def connected_both(a, b, a_id, b_id, timeout=30):
    a.wait_event("connected", timeout, peer=b_id)
    b.wait_event("connected", timeout, peer=a_id)


def check_link_down(lab, args):
    key_b = os.path.join(args.out, "link-b.key")
    flags = ["--max-backoff-ms", str(args.max_backoff_ms), "--check-interval-ms", str(args.check_interval_ms)]
    b = lab.start("b", args.peer, ["--listen", "/ip4/10.77.1.2/tcp/4001", "--key-file", key_b], "link-b")
    b_addr, b_id = b.listening()
    a = lab.start("a", args.peer, ["--listen", "/ip4/10.77.1.1/tcp/4001", "--required", b_addr] + flags, "link-a")
    _, a_id = a.listening()
    connected_both(a, b, a_id, b_id)
    bound = (args.max_backoff_ms + args.check_interval_ms) / 1000.0

    mark = a.mark()
    t_down = time.monotonic()
    sh("ip", "-n", lab.ns_a, "link", "set", lab.veth_a, "down")
    time.sleep(max(0.0, t_down + args.down_secs - time.monotonic()))
    t_up = time.monotonic()
    sh("ip", "-n", lab.ns_a, "link", "set", lab.veth_a, "up")
    figures = {"down_secs": round(t_up - t_down, 2), "bound_secs": bound,
               "max_backoff_ms": args.max_backoff_ms, "check_interval_ms": args.check_interval_ms}
    lost = [(t, o) for t, o in a.lines[mark:] if o.get("event") == "disconnected" and o.get("peer") == b_id]
    figures["disconnect_seen_after_secs"] = round(lost[0][0] - t_down, 2) if lost else None
    figures["redials_while_down"] = sum(
        1 for t, o in a.lines[mark:] if o.get("event") == "redial_scheduled" and t <= t_up)
    try:
        _, t_back, _ = a.wait("reconnect", lambda o: o.get("event") == "connected" and o.get("peer") == b_id,
                              timeout=bound + 60, since=mark)
        figures["reconnected_after_link_up_secs"] = round(t_back - t_up, 2)
    except Timeout:
        figures["reconnected_after_link_up_secs"] = None
    problems = []
    if not lost:
        problems.append("no disconnect while the link was down")
    elif lost[0][0] > t_up:
        problems.append("disconnect reported only after the link returned")
    back = figures["reconnected_after_link_up_secs"]
    if back is None:
        problems.append(f"not reconnected within {bound + 60:.0f} s of the link returning")
    elif back > bound:
        problems.append(f"reconnected {back} s after the link returned; limit {bound} s")
    lab.stop_peers()
    return problems, figures


def message_arrivals(peer, sender_id, flood):
    """(arrival time, sequence number) of every message of flood `flood` received
    from `sender_id`."""
    arrivals = []
    for t, obj in list(peer.lines):
        if obj.get("event") != "message" or obj.get("peer") != sender_id:
            continue
        parts = obj.get("data", "").split(":", 3)
        if len(parts) >= 4 and parts[0] == "flood" and parts[1] == str(flood):
            arrivals.append((t, int(parts[2])))
    return arrivals


def failed_set(ranges):
    failed = set()
    for first, last in ranges:
        failed.update(range(first, last + 1))
    return failed


def check_loss(lab, args):
    how, addr_a, addr_b = lab.impair(args.delay_ms, args.loss_percent)
    large_protocol = args.large_protocol or PROTOCOL
    floods = [(args.count, args.size, PROTOCOL), (args.large_count, args.large_size, large_protocol)]
    floods = [(count, size, protocol) for count, size, protocol in floods if count > 0]
    figures = {"impairment": how, "tcp_congestion_control": lab.congestion_control(args.congestion_control),
               "delay_ms_each_way": args.delay_ms, "loss_percent_each_way": args.loss_percent,
               "floods_each_way": [f"{count} x {size} B on {protocol}" for count, size, protocol in floods]}
    protocols = ["--protocol", PROTOCOL]
    if large_protocol != PROTOCOL:
        protocols += ["--protocol", large_protocol]
        if args.large_priority:
            protocols += ["--priority", f"{large_protocol}={args.large_priority}"]
            figures["large_priority"] = args.large_priority
    problems = []
    try:
        a = lab.start("a", args.peer, ["--listen", f"/ip4/{addr_a}/tcp/4002"] + protocols, "loss-a")
        a_addr, a_id = a.listening()
        b = lab.start("b", args.peer, ["--listen", f"/ip4/{addr_b}/tcp/4002", "--dial", a_addr] + protocols,
                      "loss-b")
        _, b_id = b.listening()
        connected_both(a, b, a_id, b_id, timeout=60)
        t0 = time.monotonic()
        # Both directions at once, the small and the large flood in parallel.
        for count, size, protocol in floods:
            for sender in (a, b):
                sender.command(f"flood * {protocol} {count} {size}")
        done = {}
        for direction, sender in (("a_to_b", a), ("b_to_a", b)):
            since = 0
            for _ in floods:
                index, t_done, line = sender.wait_event("flood_done", args.flood_timeout, since=since)
                since = index + 1
                done[(direction, line["flood"])] = (t_done, line)
        for (direction, flood), (t_done, line) in sorted(done.items()):
            receiver, sender_id = (b, a_id) if direction == "a_to_b" else (a, b_id)
            ok = set(range(line["count"])) - failed_set(line["failed_ranges"])
            deadline = time.monotonic() + args.delivery_timeout
            while True:
                arrivals = message_arrivals(receiver, sender_id, flood)
                if ok <= {seq for _, seq in arrivals} or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # late duplicates would show up here
            arrivals = message_arrivals(receiver, sender_id, flood)
            received = {seq for _, seq in arrivals}
            duplicates = len(arrivals) - len(received)
            missing = sorted(ok - received)
            delivered_after_error = sorted(received - ok)
            secs = max(t_done - t0, 1e-3)
            delivery_secs = max(max((t for t, _ in arrivals), default=t0) - t0, 1e-3)
            figures[f"{direction}_{line['size']}B"] = {
                "count": line["count"], "sent_ok": line["sent_ok"], "failed": line["failed"],
                "first_error": line["first_error"],
                "send_secs": round(secs, 2), "sent_ok_per_sec": round(line["sent_ok"] / secs, 1),
                "delivered": len(received), "duplicates": duplicates, "missing": len(missing),
                "delivered_though_send_failed": len(delivered_after_error),
                "first_arrival_ms": round((min(t for t, _ in arrivals) - t0) * 1000) if arrivals else None,
                "all_delivered_secs": round(delivery_secs, 2),
                "delivered_per_sec": round(len(received) / delivery_secs, 1),
                "goodput_kib_per_sec": round(len(received) * line["size"] / 1024 / delivery_secs, 1),
            }
            name = f"{direction} {line['count']} x {line['size']} B"
            if duplicates:
                problems.append(f"{name}: {duplicates} messages delivered more than once")
            if missing:
                problems.append(f"{name}: {len(missing)} messages sent Ok never arrived (first: {missing[:10]})")
            if line["sent_ok"] == 0:
                problems.append(f"{name}: no send returned Ok ({line['first_error']})")
        for peer, name in ((a, "a"), (b, "b")):
            figures[f"{name}_disconnects"] = sum(1 for _, o in peer.lines if o.get("event") == "disconnected")
            figures[f"{name}_stalls"] = sum(1 for _, o in peer.lines if o.get("event") == "connection_stalled")
    finally:
        lab.stop_peers()
        counters = lab.unimpair()
        if counters:
            figures["emulator"] = {k: v for k, v in counters.items() if k != "event"}
            for direction in ("a_to_b", "b_to_a"):
                c = counters[direction]
                if c["packets"]:
                    figures["emulator"][direction]["loss_measured_percent"] = round(
                        100.0 * c["dropped_loss"] / c["packets"], 2)
    return problems, figures


def host_figures(peer, stats):
    return {"connected_peers": stats["connected_peers"], "connections": stats["connections"],
            "pool_streams": stats["pool_streams"], "pool_borrowed": stats["pool_borrowed"],
            "pool_waiters": stats["pool_waiters"], "inbound_streams": stats["inbound_streams"],
            "tasks": stats["tasks"], "fds": peer.open_fds(), "rss_kib": peer.rss_kib()}


COMPARED = ("connected_peers", "connections", "pool_streams", "pool_borrowed", "pool_waiters",
            "inbound_streams", "tasks", "fds")


def check_kill(lab, args):
    key_b = os.path.join(args.out, "kill-b.key")
    flags = ["--max-backoff-ms", str(args.max_backoff_ms), "--check-interval-ms", str(args.check_interval_ms)]
    b_args = ["--listen", "/ip4/10.77.1.2/tcp/4003", "--key-file", key_b, "--quiet-messages"]
    bound = (args.max_backoff_ms + args.check_interval_ms) / 1000.0
    b = lab.start("b", args.peer, b_args, "kill-b")
    b_addr, b_id = b.listening()
    a = lab.start("a", args.peer, ["--listen", "/ip4/10.77.1.1/tcp/4003", "--required", b_addr, "--quiet-messages"]
                  + flags, "kill-a")
    _, a_id = a.listening()
    connected_both(a, b, a_id, b_id)
    time.sleep(args.settle_secs)
    baseline = host_figures(a, a.stats())
    figures = {"cycles": args.cycles, "bound_secs": bound, "baseline": baseline}
    problems = []
    detect, reconnect = [], []
    rng = random.Random(args.seed)
    for cycle in range(1, args.cycles + 1):
        a.command(f"flood * {PROTOCOL} {args.kill_flood_count} {args.size}")
        b.command(f"flood * {PROTOCOL} {args.kill_flood_count} {args.size}")
        time.sleep(rng.uniform(0.2, 0.8))
        mark = a.mark()
        t_kill = time.monotonic()
        b.kill9()
        try:
            _, t_lost, _ = a.wait_event("disconnected", 15, since=mark, peer=b_id)
            detect.append(t_lost - t_kill)
        except Timeout as e:
            problems.append(f"cycle {cycle}: {e}")
            break
        # A's flood ends once its remaining sends fail with NotConnected; B comes back
        # only then, so that A's pool for the last connection sees no traffic and
        # can be compared with the baseline.
        deadline = time.monotonic() + 60
        while sum(1 for _, o in list(a.lines) if o.get("event") == "flood_done") < cycle:
            if time.monotonic() > deadline:
                problems.append(f"cycle {cycle}: A's flood did not end after the kill")
                break
            time.sleep(0.1)
        b = lab.start("b", args.peer, b_args, "kill-b")
        _, t_listening, _ = b.wait_event("listening", 20)
        try:
            _, t_back, _ = a.wait("reconnect", lambda o: o.get("event") == "connected" and o.get("peer") == b_id,
                                  timeout=bound + 30, since=mark)
            took = t_back - t_listening
            reconnect.append(took)
            if took > bound:
                problems.append(f"cycle {cycle}: reconnected {took:.2f} s after B listened; limit {bound} s")
        except Timeout as e:
            problems.append(f"cycle {cycle}: not reconnected: {e}")
            break
    figures["disconnect_seen_secs"] = {"max": round(max(detect), 3), "mean": round(sum(detect) / len(detect), 3)} if detect else None
    figures["reconnect_after_restart_secs"] = (
        {"max": round(max(reconnect), 3), "mean": round(sum(reconnect) / len(reconnect), 3), "count": len(reconnect)}
        if reconnect else None)
    # Every flood of A must have ended before A is at rest.
    # At rest: poll until the figures match the baseline, for up to settle_timeout.
    final = None
    deadline = time.monotonic() + args.settle_timeout
    while True:
        time.sleep(1.0)
        final = host_figures(a, a.stats())
        b_stats = b.stats()
        a_stats = a.stats()
        mirror = mirror_mismatches({a_id: a_stats, b_id: b_stats})
        if all(final[k] == baseline[k] for k in COMPARED) and not mirror:
            break
        if time.monotonic() > deadline:
            break
    figures["final"] = final
    figures["mirror_mismatches"] = mirror
    for k in COMPARED:
        if final[k] != baseline[k]:
            problems.append(f"{k}: {final[k]} after {args.cycles} kills, baseline {baseline[k]}")
    if mirror:
        problems.append(f"pooled streams and inbound streams disagree: {mirror}")
    lab.stop_peers()
    return problems, figures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prefix", default="lqchaos")
    parser.add_argument("--checks", default="link-down,loss,kill")
    parser.add_argument("--down-secs", type=float, default=20.0)
    parser.add_argument("--max-backoff-ms", type=int, default=4000)
    parser.add_argument("--check-interval-ms", type=int, default=1000)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--loss-percent", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--congestion-control", default=None,
                        help="TCP congestion control for the loss check, one of net.ipv4.tcp_allowed_congestion_control (e.g. reno); default: the system's")
    parser.add_argument("--large-count", type=int, default=100)
    parser.add_argument("--large-size", type=int, default=262144)
    parser.add_argument("--large-protocol", default=None)
    parser.add_argument("--large-priority", default=None, choices=["high", "normal", "low"])
    parser.add_argument("--flood-timeout", type=float, default=600.0)
    parser.add_argument("--delivery-timeout", type=float, default=120.0)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--kill-flood-count", type=int, default=100000)
    parser.add_argument("--settle-secs", type=float, default=2.0)
    parser.add_argument("--settle-timeout", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    checks = {"link-down": check_link_down, "loss": check_loss, "kill": check_kill}
    wanted = [c for c in args.checks.split(",") if c]
    unknown = [c for c in wanted if c not in checks]
    if unknown:
        sys.exit(f"unknown checks: {unknown}; known: {list(checks)}")
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "peer": args.peer, "checks": {}}
    failed = []
    lab = Lab(args.prefix, args.out)
    try:
        for name in wanted:
            print(f"== {name}", flush=True)
            started = time.monotonic()
            try:
                problems, figures = checks[name](lab, args)
            except (Timeout, RuntimeError, KeyError, ValueError) as e:
                problems, figures = [f"aborted: {e}"], {}
                lab.stop_peers()
            figures["took_secs"] = round(time.monotonic() - started, 1)
            verdict = "FAIL" if problems else "PASS"
            results["checks"][name] = {"verdict": verdict, "problems": problems, "figures": figures}
            print(f"{verdict} {name}: {json.dumps(figures)}", flush=True)
            for p in problems:
                print(f"    {p}", flush=True)
            if problems:
                failed.append(name)
    finally:
        lab.close()
        with open(os.path.join(args.out, "chaos-results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print("== summary")
    for name in wanted:
        print(f"{results['checks'][name]['verdict']} {name}")
    print(f"results: {os.path.join(args.out, 'chaos-results.json')}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
