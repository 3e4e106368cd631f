"""A cluster of `peer` processes at scale; run by scripts/cluster.sh.

N nodes (default 100) plus one seed, all on the chain `scale`
(`--seed <seed> --chain scale --min-peers M --max-peers 50`; the seed runs
`--chain scale` alone, with room for every node). Where it runs:

netns-netem  root, `ip netns` and the kernel's sch_netem: one namespace per
             process, each joined by a veth to a bridge (in a namespace of its
             own), `tc netem delay L` on every node's veth.
netns-hub    root and `ip netns` but no sch_netem (`tc` says "Specified qdisc
             kind is unknown"): one namespace per process, each with a TUN
             device; one user-space hub (`cluster.py hub`, linkemu.py's idea for
             many ports) reads every packet, delays it L ms and writes it to the
             TUN of the namespace that owns the destination address.
loopback     not root, namespaces unavailable, or --loopback: every process on
             127.0.0.1 (a port each), no emulated latency.
In both namespace modes a packet is delayed L ms once, one way (RTT 2 L).

Three measurements, in order, on the same cluster:

1. min_peers  Nodes start in batches of --batch; for each node, the time from
   its spawn to its first moment with >= M connected peers (from its
   `connected`/`disconnected` lines), and for the cluster, the time from the
   first node's spawn until every node has >= M at once. Checked with `stats`.
2. broadcast  Every process subscribes to /chain/scale/blocks; once every
   node's `stats.topics[].peers` is >= M (meshes form at the next heartbeats),
   one node publishes --messages texts `scale:<run>:<seq>` at --rate per
   second. Latency of a message = arrival of its `gossip` line at the last node
   to get it, minus the time the script wrote the `publish` command (also
   given from the `published` reply). Loss = messages some node never printed;
   duplicates = `gossip` lines beyond the first, per node and message.
3. kills      --cycles times: a sender S floods a receiver R and the victim V
   (a random node, never the seed, S or R) with `flood`, V is killed with
   SIGKILL mid-flood and restarted with the same key and port. Loss = a
   sequence number whose send returned Ok (not in `failed_ranges`) that the
   receiver never printed, counted for receivers that were not killed (R).
   For V, messages sent Ok but not printed before the kill are reported as
   `lost_with_killed_receiver`, not as loss: a process killed with SIGKILL
   loses what it had read but not yet printed. Also reported: the time each
   restarted V took to have >= M peers again.

Timestamps are the script's monotonic clock when it reads a line (one
machine). Results: <out>/cluster-results.json, charts <out>/broadcast-latency.svg
and <out>/peers-over-time.svg; every line but `message`/`gossip` of process
<name> goes to <out>/<name>.stdout, its logs to <out>/<name>.stderr.
Exit: 0 all checks passed, 1 a check failed, 2 set-up failed.
"""

import argparse
import collections
import datetime
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linkemu import CLONE_NEWNET, attach_tun, enter_netns, libc  # noqa: E402
from peerproc import PeerProc, Timeout  # noqa: E402

TOPIC = "/chain/scale/blocks"
PROTOCOL = "/liquid/chat/1"
CHAIN = "scale"
PORT = 4001
TUN = "lqhub"


def sh(*cmd, check=True):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary_ms(secs):
    if not secs:
        return None
    ms = [s * 1000.0 for s in secs]
    return {"count": len(ms), "p50": round(pct(ms, 50), 1), "p99": round(pct(ms, 99), 1),
            "max": round(max(ms), 1), "min": round(min(ms), 1)}


# ---------------------------------------------------------------- the hub

def hub_main(argv):
    """`cluster.py hub --ns A,B,... --delay-ms L`: one TUN (`lqhub`) per
    namespace; every IPv4 packet read from one is written, L ms later, to the
    TUN whose namespace owns its destination (addresses learnt from the source
    addresses of the packets each TUN emits, and from --addrs). Prints `ready`,
    and its counters on SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="cluster.py hub")
    parser.add_argument("--ns", required=True, help="comma-separated namespaces")
    parser.add_argument("--addrs", required=True, help="comma-separated IPv4 address of each namespace")
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    route = {}  # destination address (4 bytes) -> fd
    fds = []
    for ns, addr in zip(args.ns.split(","), args.addrs.split(",")):
        enter_netns(f"/var/run/netns/{ns}")
        fd = attach_tun(TUN)
        fds.append(fd)
        route[bytes(int(x) for x in addr.split("."))] = fd
    if libc.setns(home, CLONE_NEWNET) != 0:
        sys.exit("cannot return to the original network namespace")
    os.close(home)

    delay = args.delay_ms / 1000.0
    counts = {"packets": 0, "bytes": 0, "no_route": 0, "write_failed": 0, "max_queue": 0,
              "max_late_ms": 0.0, "late_over_5ms": 0}
    queue = collections.deque()  # (due, fd, packet): constant delay, so due times only grow
    stop = False

    dump = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    def on_usr1(_signum, _frame):
        nonlocal dump
        dump = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_usr1)
    poller = select.epoll()
    for fd in fds:
        poller.register(fd, select.EPOLLIN)
    print(json.dumps({"event": "ready", "ports": len(fds), "delay_ms": args.delay_ms}), flush=True)
    read, write, mono = os.read, os.write, time.monotonic
    fresh = dict(counts)
    while not stop:
        if dump:
            # Counters since the last dump, then start afresh.
            dump = False
            print(json.dumps({"event": "counters", **counts, "queued": len(queue)}), flush=True)
            counts = dict(fresh)
        timeout = max(0.0, queue[0][0] - mono()) if queue else 0.5
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        now = mono()
        for fd, _ in events:
            for _ in range(64):
                try:
                    packet = read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                counts["packets"] += 1
                counts["bytes"] += len(packet)
                out = route.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
                if out is None:
                    counts["no_route"] += 1
                    continue
                queue.append((now + delay, out, packet))
        if len(queue) > counts["max_queue"]:
            counts["max_queue"] = len(queue)
        now = mono()
        while queue and queue[0][0] <= now:
            due, out, packet = queue.popleft()
            late = now - due
            if late > 0.005:
                counts["late_over_5ms"] += 1
                if late * 1000 > counts["max_late_ms"]:
                    counts["max_late_ms"] = round(late * 1000, 1)
            try:
                write(out, packet)
            except OSError:
                counts["write_failed"] += 1
    print(json.dumps({"event": "counters", **counts}), flush=True)


# ---------------------------------------------------------------- the network


class Net:
    """Where processes run: `address(i)` and `netns(i)` for process i (0 is the
    seed); `close` removes whatever was made."""

    def __init__(self, mode, count, latency_ms, prefix, base_port, out, same_subnet=False):
        self.mode = mode
        self.same_subnet = same_subnet
        self.count = count
        self.latency_ms = latency_ms
        self.prefix = prefix
        self.base_port = base_port
        self.out = out
        self.hub = None
        self.made = []
        self.bridge_ns = f"{prefix}-br"

    def ns(self, i):
        return f"{self.prefix}-{i}" if self.mode != "loopback" else None

    def ip(self, i):
        if self.mode == "loopback":
            return "127.0.0.1"
        if self.same_subnet:
            return f"10.78.{i // 250}.{i % 250 + 1}"
        # Each process in a /24 (and a /16) of its own, as nodes on the internet
        # would be: the host caps established inbound connections per /24.
        return f"10.{100 + i // 250}.{i % 250}.1"

    def port(self, i):
        return self.base_port + i if self.mode == "loopback" else PORT

    def listen(self, i):
        return f"/ip4/{self.ip(i)}/tcp/{self.port(i)}"

    def setup(self):
        if self.mode == "loopback":
            return
        if self.mode == "netns-netem":
            sh("ip", "netns", "add", self.bridge_ns)
            self.made.append(self.bridge_ns)
            sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i in range(self.count):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            cmds = [f"link set lo up"]
            if self.mode == "netns-netem":
                sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                   "netns", self.bridge_ns)
                sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0", "up")
                cmds += [f"addr add {self.ip(i)}/8 dev eth0", "link set eth0 up"]
            else:
                cmds += [f"tuntap add dev {TUN} mode tun", f"link set {TUN} txqueuelen 10000",
                         f"addr add {self.ip(i)}/8 dev {TUN}", f"link set {TUN} up"]
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(cmds) + "\n", text=True,
                           check=True, capture_output=True)
            if self.mode == "netns-netem" and self.latency_ms > 0:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                   f"{self.latency_ms}ms", "limit", "100000")
        if self.mode == "netns-hub":
            here = os.path.abspath(__file__)
            self.hub = subprocess.Popen(
                [sys.executable, here, "hub", "--ns", ",".join(self.ns(i) for i in range(self.count)),
                 "--addrs", ",".join(self.ip(i) for i in range(self.count)), "--delay-ms", str(self.latency_ms)],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.out, "hub.stderr"), "a"), text=True)
            ready = self.hub.stdout.readline()
            if '"ready"' not in ready:
                raise RuntimeError(f"the hub did not start: {ready!r} (see hub.stderr)")

    def tun_drops(self):
        """Packets the kernel dropped at the TUN queues (the hub fell behind)."""
        if self.mode != "netns-hub":
            return None
        total = 0
        for i in range(self.count):
            r = sh("ip", "-n", self.ns(i), "-s", "-j", "link", "show", TUN, check=False)
            try:
                s = json.loads(r.stdout)[0]["stats64"]
                total += s["tx"]["dropped"] + s["rx"]["dropped"]
            except (ValueError, KeyError, IndexError):
                pass
        return total

    def hub_counters(self):
        """The hub's counters since the last call (None without a hub)."""
        if self.hub is None or self.hub.poll() is not None:
            return None
        self.hub.send_signal(signal.SIGUSR1)
        ready, _, _ = select.select([self.hub.stdout], [], [], 10)
        if not ready:
            return None
        line = json.loads(self.hub.stdout.readline())
        line.pop("event", None)
        return line

    def stop_hub(self):
        counters = None
        if self.hub is not None:
            self.hub.terminate()
            try:
                out, _ = self.hub.communicate(timeout=10)
                for line in out.splitlines():
                    if '"counters"' in line:
                        counters = json.loads(line)
                        counters.pop("event", None)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
            self.hub = None
        return counters

    def close(self):
        self.stop_hub()
        for ns in reversed(self.made):
            # Processes left in our namespaces are ones this run started.
            r = sh("ip", "netns", "pids", ns, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def cpu_secs(pid):
    """User + system CPU seconds of a process (and its waited-for children), or 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def pick_mode(args):
    """(mode, why)."""
    if args.loopback:
        return "loopback", "--loopback given"
    if os.geteuid() != 0:
        return "loopback", "not root"
    if not shutil.which("ip"):
        return "loopback", "iproute2 (ip) not installed"
    probe = f"{args.prefix}-probe"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        return "loopback", "cannot create a network namespace"
    try:
        r = sh("ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1", check=False)
        if r.returncode != 0:
            return "loopback", f"cannot make a veth pair in a namespace ({r.stderr.strip()})"
        r = sh("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "v0", "root", "netem", "delay",
               "1ms", check=False)
        if r.returncode == 0:
            return "netns-netem", "sch_netem available"
        why = f"no sch_netem (tc: {(r.stderr or '').strip()})"
        if not os.path.exists("/dev/net/tun"):
            return "loopback", why + " and no /dev/net/tun for the user-space hub"
        return "netns-hub", why + "; user-space hub over TUN"
    finally:
        sh("ip", "netns", "del", probe, check=False)


# ---------------------------------------------------------------- the nodes


class Node:
    """One process slot: the current PeerProc plus what the script learnt from
    its lines, kept across restarts."""

    def __init__(self, index, name):
        self.index = index
        self.name = name
        self.proc = None
        self.peer_id = None
        self.address = None
        self.lock = threading.Lock()
        self.peers = set()
        self.spawned = None
        self.reached = None  # first time with >= M peers since the last spawn
        self.reached_chain = None  # same, counting only peers seen in `discovered` lines
        self.discovered = set()
        self.min_peers = 0
        self.gossip = {}  # seq -> first arrival time
        self.gossip_dups = 0
        self.gossip_foreign = 0
        self.flood_rx = collections.defaultdict(set)  # (sender, flood) -> seqs
        self.flood_dups = 0
        self.published = []  # arrival time of each `published` reply
        self.errors = []
        self.counts = collections.Counter()
        self.refused = 0  # connections refused (the `count`s of `refused` lines)
        self.scores = []  # (time, peer, score) from `gossip_score` lines
        self.run_tag = None

    def on_line(self, t, obj):
        event = obj.get("event")
        with self.lock:
            self.counts[event] += 1
            if event == "refused":
                self.refused += obj.get("count", 1)
            if event == "connected":
                self.peers.add(obj.get("peer"))
                if self.reached is None and len(self.peers) >= self.min_peers:
                    self.reached = t
                self._check_chain(t)
            elif event == "disconnected":
                self.peers.discard(obj.get("peer"))
            elif event == "discovered":
                self.discovered.add(obj.get("peer"))
                self._check_chain(t)
            elif event == "gossip":
                parts = obj.get("data", "").split(":")
                if len(parts) == 3 and parts[0] == "scale" and parts[1] == self.run_tag:
                    seq = int(parts[2])
                    if seq in self.gossip:
                        self.gossip_dups += 1
                    else:
                        self.gossip[seq] = t
                else:
                    self.gossip_foreign += 1
            elif event == "message":
                parts = obj.get("data", "").split(":", 3)
                if len(parts) >= 4 and parts[0] == "flood":
                    key = (obj.get("peer"), int(parts[1]))
                    seq = int(parts[2])
                    if seq in self.flood_rx[key]:
                        self.flood_dups += 1
                    else:
                        self.flood_rx[key].add(seq)
            elif event == "published":
                self.published.append(t)
            elif event == "gossip_score":
                self.scores.append((t, obj.get("peer"), obj.get("score")))
            elif event == "error":
                self.errors.append((t, obj.get("message")))

    def _check_chain(self, t):
        # Connected peers that discovery reported as nodes of the chain: close to
        # what discovery itself counts towards min_peers (kad's and the seed's
        # connections excluded, unless found as chain nodes).
        if self.reached_chain is None and len(self.peers & self.discovered) >= self.min_peers:
            self.reached_chain = t

    def npeers(self):
        with self.lock:
            return len(self.peers)


def keep_line(obj):
    # gossip and message lines are only counted (on_line), not stored.
    return obj.get("event") not in ("gossip", "message")


class Cluster:
    def __init__(self, args, net):
        self.args = args
        self.net = net
        self.nodes = [Node(i, "seed" if i == 0 else f"n{i:03d}") for i in range(args.nodes + 1)]
        self.seed_addr = None
        self.pids_file = open(os.path.join(args.out, "pids"), "a")

    def spawn(self, node):
        a = self.args
        i = node.index
        key = os.path.join(a.out, f"{node.name}.key")
        argv = ["--listen", self.net.listen(i), "--key-file", key, "--chain", CHAIN]
        if i == 0:
            argv += ["--max-peers", str(a.nodes + 20)]
        else:
            argv += ["--seed", self.seed_addr, "--min-peers", str(a.min_peers), "--max-peers", str(a.max_peers)]
        argv += a.node_args.split()
        with node.lock:
            node.peers = set()
            node.reached = None
            node.reached_chain = None
            node.discovered = set()
            node.min_peers = a.min_peers
            node.spawned = time.monotonic()
        node.proc = PeerProc(a.peer, argv, node.name, a.out, netns=self.net.ns(i), keep=keep_line,
                             on_line=node.on_line, log_skip=("message", "gossip"))
        self.pids_file.write(f"{node.proc.pid}\n")
        self.pids_file.flush()
        return node.proc

    def wait_listening(self, node, timeout=60):
        addr, peer_id = node.proc.listening(timeout)
        node.address, node.peer_id = addr, peer_id
        return addr

    def all_stats(self, nodes, timeout=20):
        """{index: stats line} for the nodes that answered."""
        marks = {}
        for n in nodes:
            if n.proc and n.proc.alive():
                marks[n.index] = n.proc.mark()
                n.proc.command("stats")
        out = {}
        for n in nodes:
            if n.index in marks:
                try:
                    out[n.index] = n.proc.wait_event("stats", timeout, marks[n.index])[2]
                except Timeout:
                    pass
        return out

    def stop_all(self):
        procs = [n.proc for n in self.nodes if n.proc is not None]
        for p in procs:
            if p.alive():
                p.command("quit")
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
            try:
                p.stderr.close()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------- phase 1


def phase_min_peers(cl, args, samples):
    seed = cl.nodes[0]
    cl.spawn(seed)
    cl.seed_addr = cl.wait_listening(seed)
    print(f"  seed {cl.seed_addr}", flush=True)
    workers = cl.nodes[1:]
    t_first = time.monotonic()
    sampler_stop = threading.Event()

    def sample():
        while not sampler_stop.is_set():
            counts = [n.npeers() for n in workers if n.proc is not None]
            if counts:
                samples.append({"t": round(time.monotonic() - t_first, 2), "started": len(counts),
                                "min": min(counts), "p50": pct(counts, 50), "max": max(counts),
                                "at_least_m": sum(1 for c in counts if c >= args.min_peers)})
            sampler_stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for start in range(0, len(workers), args.batch):
        batch = workers[start:start + args.batch]
        for n in batch:
            cl.spawn(n)
        for n in batch:
            cl.wait_listening(n)
        time.sleep(args.batch_pause)
    t_all_started = time.monotonic()
    print(f"  {len(workers)} nodes started in {t_all_started - t_first:.1f} s", flush=True)
    deadline = time.monotonic() + args.connect_timeout
    t_all = None
    while time.monotonic() < deadline:
        if all(n.npeers() >= args.min_peers for n in workers):
            t_all = time.monotonic()
            break
        time.sleep(0.1)
    per_node = [n.reached - n.spawned for n in workers if n.reached is not None]
    per_node_chain = [n.reached_chain - n.spawned for n in workers if n.reached_chain is not None]
    never = [n.name for n in workers if n.reached is None]
    below = [(n.name, n.npeers()) for n in workers if n.npeers() < args.min_peers]
    time.sleep(2.0)
    stats = cl.all_stats(cl.nodes)
    connected = [stats[n.index]["connected_peers"] for n in workers if n.index in stats]
    figures = {
        "nodes": len(workers), "min_peers": args.min_peers, "batch": args.batch,
        "all_started_secs": round(t_all_started - t_first, 2),
        "per_node_time_to_min_peers_ms": summary_ms(per_node),
        "cluster_time_to_min_peers_secs": round(t_all - t_first, 2) if t_all else None,
        "per_node_time_to_min_discovered_peers_ms": summary_ms(per_node_chain),
        "never_reached_min_discovered_peers": [n.name for n in workers if n.reached_chain is None],
        "never_reached": never, "below_min_peers_at_deadline": below,
        "stats_connected_peers": {"min": min(connected), "p50": pct(connected, 50), "max": max(connected)}
        if connected else None,
        "seed_connected_peers": stats.get(0, {}).get("connected_peers"),
        "stats_missing": [n.name for n in cl.nodes if n.index not in stats],
    }
    problems = []
    if t_all is None:
        problems.append(f"not every node had >= {args.min_peers} peers within {args.connect_timeout} s: "
                        f"{below[:10]}")
    low = [(cl.nodes[i].name, s["connected_peers"]) for i, s in stats.items()
           if i != 0 and s["connected_peers"] < args.min_peers]
    if low:
        problems.append(f"stats: nodes below {args.min_peers} connected peers: {low[:10]}")
    return problems, figures, sampler_stop


# ---------------------------------------------------------------- phase 2


def phase_broadcast(cl, args):
    everyone = cl.nodes
    run_tag = f"{os.getpid()}{int(time.time()) % 100000}"
    for n in everyone:
        n.run_tag = run_tag
    marks = {n.index: n.proc.mark() for n in everyone}
    for n in everyone:
        n.proc.command(f"subscribe {TOPIC}")
    for n in everyone:
        n.proc.wait_event("subscribed", 20, marks[n.index])
    # Meshes: every node sees >= M subscribed peers (or all its peers, if fewer).
    t0 = time.monotonic()
    deadline = t0 + args.mesh_timeout
    ready = False
    topic_peers = {}
    while time.monotonic() < deadline:
        stats = cl.all_stats(everyone)
        topic_peers = {}
        for i, s in stats.items():
            t = next((x for x in s.get("topics", []) if x.get("topic") == TOPIC), None)
            topic_peers[i] = (t or {}).get("peers", 0)
        want = {i: min(args.min_peers, stats[i]["connected_peers"]) for i in stats}
        if len(stats) == len(everyone) and all(topic_peers[i] >= max(1, want[i]) for i in stats):
            ready = True
            break
        time.sleep(1.0)
    mesh_secs = time.monotonic() - t0
    time.sleep(args.mesh_settle)  # GRAFTs go out at the next heartbeats
    tp = list(topic_peers.values())
    print(f"  topic peers ready={ready} after {mesh_secs:.1f} s (min {min(tp) if tp else None}, "
          f"p50 {pct(tp, 50) if tp else None})", flush=True)

    # The cost of the cluster at rest (subscribed, nothing published): what the
    # network and the processes spend on DHT, heartbeats and connection churn.
    # Connections refused right after their handshake cost a handshake too but
    # give no `connection_established` line at the refusing end (and none at all
    # when the dialler refuses its own): they are counted from `refused` lines.
    idle = None
    if args.idle_secs > 0:
        def churn():
            return (sum(n.counts["connection_established"] for n in everyone),
                    sum(n.refused for n in everyone), sum(n.counts["dial_failed"] for n in everyone),
                    sum(cpu_secs(n.proc.pid) for n in everyone))

        time.sleep(args.idle_settle_secs)
        cl.net.hub_counters()
        t0, first = time.monotonic(), churn()
        series, last = [], first
        step = min(10.0, args.idle_secs)
        while time.monotonic() - t0 < args.idle_secs - 1e-3:
            time.sleep(min(step, args.idle_secs - (time.monotonic() - t0)))
            now = churn()
            # Per step: connections established, refused, dials failed, CPU cores.
            series.append([now[0] - last[0], now[1] - last[1], now[2] - last[2],
                           round((now[3] - last[3]) / step, 2)])
            last = now
        h = cl.net.hub_counters()
        secs = time.monotonic() - t0
        idle = {"secs": round(secs, 1), "after_settling_secs": args.idle_settle_secs,
                "peers_cpu_cores": round((last[3] - first[3]) / secs, 2),
                "connections_established_per_sec": round((last[0] - first[0]) / secs, 1),
                "connections_refused_per_sec": round((last[1] - first[1]) / secs, 1),
                "dials_failed_per_sec": round((last[2] - first[2]) / secs, 1),
                "per_step": {"step_secs": step,
                             "columns": ["established", "refused", "dials_failed", "cpu_cores"],
                             "rows": series}}
        if h:
            idle["packets_per_sec"] = round(h["packets"] / secs)
            idle["kib_per_sec"] = round(h["bytes"] / 1024 / secs)
        print(f"  at rest: { {k: v for k, v in idle.items() if k != 'per_step'} }", flush=True)
        print(f"  at rest, per {step:g} s (established, refused, dials failed, cores): "
              f"{idle['per_step']['rows']}", flush=True)

    publisher = cl.nodes[1]
    receivers = [n for n in everyone if n is not publisher]
    # Every --score-every s, the gossipsub score of the publisher at each
    # receiver connected to it (others answer 0): below gossipsub's graylist
    # threshold a receiver ignores all the publisher sends.
    score_stop = threading.Event()

    def poll_scores():
        while not score_stop.is_set():
            for n in receivers:
                if n.proc.alive() and publisher.peer_id in n.peers:
                    n.proc.command(f"score {publisher.peer_id}")
            score_stop.wait(args.score_every)

    scorer = None
    if args.score_every > 0:
        scorer = threading.Thread(target=poll_scores, daemon=True)
        scorer.start()
    silent_before = {n.index: n.counts["connection_silent"] for n in everyone}
    sent = []
    interval = 1.0 / args.rate
    t_start = time.monotonic()
    for k in range(args.messages):
        due = t_start + k * interval
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent.append(time.monotonic())
        publisher.proc.command(f"publish {TOPIC} scale:{run_tag}:{k}")
    t_last = time.monotonic()
    publish_secs = t_last - t_start
    deadline = t_last + args.delivery_timeout
    while time.monotonic() < deadline:
        if all(len(n.gossip) >= args.messages for n in receivers):
            break
        time.sleep(0.2)
    time.sleep(2.0)  # late duplicates would show up here
    score_stop.set()
    if scorer is not None:
        scorer.join(timeout=10)
    # What the hosts counted on the topic (received / dropped / rejected), to set
    # against the `gossip` lines printed.
    topic_counts = {"received_messages": 0, "dropped_messages": 0, "rejected_messages": 0, "nodes": 0}
    for i, st in cl.all_stats(everyone).items():
        t = next((x for x in st.get("topics", []) if x.get("topic") == TOPIC), None)
        if t and cl.nodes[i] is not publisher:
            topic_counts["nodes"] += 1
            for key in ("received_messages", "dropped_messages", "rejected_messages"):
                topic_counts[key] += t.get(key, 0)
    last, every, last_pub = [], [], []
    lost = {}
    for k in range(args.messages):
        times = [n.gossip.get(k) for n in receivers]
        missing = [n.name for n, t in zip(receivers, times) if t is None]
        if missing:
            lost[k] = missing
        got = [t for t in times if t is not None]
        every.extend(t - sent[k] for t in got)
        if got and not missing:
            last.append(max(got) - sent[k])
            if len(publisher.published) == args.messages:
                last_pub.append(max(got) - publisher.published[k])
    dups = sum(n.gossip_dups for n in receivers)
    figures = {
        "publisher": publisher.name, "receivers": len(receivers), "messages": args.messages,
        "rate_per_sec": args.rate, "publish_secs": round(publish_secs, 2),
        "mesh_ready": ready, "mesh_wait_secs": round(mesh_secs, 1), "at_rest_before_publishing": idle,
        "topic_peers": {"min": min(tp), "p50": pct(tp, 50), "max": max(tp)} if tp else None,
        "published_replies": len(publisher.published),
        "publisher_errors": [m for _, m in publisher.errors][:10],
        "last_node_latency_ms": summary_ms(last),
        "last_node_latency_from_published_reply_ms": summary_ms(last_pub),
        "every_delivery_latency_ms": summary_ms(every),
        "last_node_latency_ms_by_seq": [
            round((max(t for t in (n.gossip.get(k) for n in receivers) if t is not None) - sent[k]) * 1000, 1)
            if any(n.gossip.get(k) is not None for n in receivers) else None for k in range(args.messages)],
        "every_delivery_latency_ms_percentiles": [round(pct(every, q / 2) * 1000, 1) for q in range(1, 201)]
        if every else [],
        "lost_messages": len(lost), "lost_examples": dict(list(lost.items())[:5]),
        "deliveries_missing": sum(len(v) for v in lost.values()),
        "duplicates": dups,
        "stats_topic_counts_receivers": topic_counts,
        "foreign_gossip_lines": sum(n.gossip_foreign for n in receivers),
        "publisher_score_at_receivers": score_series(receivers, publisher, t_start, args.score_every),
        "gossip_dropped_lines": sum(n.counts["gossip_dropped"] for n in everyone),
        "gossip_peer_slow_lines": sum(n.counts["gossip_peer_slow"] for n in everyone),
        # Connections the liveness check closed while broadcasting (what was
        # queued on them, gossip included, went with them).
        "gossip_peer_graylisted_lines": sum(n.counts["gossip_peer_graylisted"] for n in everyone),
        "connection_silent_lines": sum(n.counts["connection_silent"] - silent_before[n.index] for n in everyone),
        "publisher_connection_silent_lines": publisher.counts["connection_silent"] - silent_before[publisher.index],
        "events_dropped_lines": sum(n.counts["events_dropped"] for n in everyone),
    }
    print(f"  connections closed as silent while broadcasting: {figures['connection_silent_lines']} "
          f"({figures['publisher_connection_silent_lines']} by the publisher); gossip peers graylisted "
          f"(whole run): {figures['gossip_peer_graylisted_lines']}", flush=True)
    ps = figures["publisher_score_at_receivers"]
    if ps and ps["rows"]:
        print(f"  publisher's gossip score at receivers: lowest {min(r[2] for r in ps['rows'])}, "
              f"at most {ps['max_below_graylist']} receivers below the graylist threshold at once", flush=True)
    problems = []
    if lost:
        problems.append(f"{len(lost)} messages never reached some node ({figures['deliveries_missing']} "
                        f"deliveries missing; e.g. {list(lost.items())[:3]})")
    if dups:
        problems.append(f"{dups} duplicate gossip lines")
    if len(publisher.published) != args.messages:
        problems.append(f"{len(publisher.published)} `published` replies for {args.messages} publishes; "
                        f"errors {figures['publisher_errors'][:3]}")
    return problems, figures, (last, every)


def score_series(receivers, publisher, t_start, every):
    """The scores of the publisher at the receivers connected to it, over
    time: one row per poll, [seconds since the first publish, receivers
    answering, min, median, how
    many below gossipsub's gossip (-10), publish (-50) and graylist (-80)
    thresholds]."""
    if every <= 0:
        return None
    polls = collections.defaultdict(list)
    for n in receivers:
        with n.lock:
            rows = [(t, s) for t, p, s in n.scores if p == publisher.peer_id and s is not None]
        for t, s in rows:
            polls[int(round((t - t_start) / every))].append(s)
    out = []
    for k in sorted(polls):
        v = polls[k]
        out.append([round(k * every, 1), len(v), round(min(v), 1), round(pct(v, 50), 1),
                    sum(1 for x in v if x < -10), sum(1 for x in v if x < -50), sum(1 for x in v if x < -80)])
    return {"columns": ["secs", "answers", "min", "p50", "below_gossip", "below_publish", "below_graylist"],
            "rows": out, "max_below_graylist": max((r[6] for r in out), default=0)}


# ---------------------------------------------------------------- phase 3


def failed_set(ranges):
    failed = set()
    for first, last in ranges:
        failed.update(range(first, last + 1))
    return failed


def ensure_connected(sender, target, timeout=30, tries=3):
    """Dials `target` from `sender` until a `connected` line (a `dialed` reply is
    not enough: the remote may still refuse, e.g. at its max_peers)."""
    for _ in range(tries):
        if target.peer_id in sender.peers:
            return True
        mark = sender.proc.mark()
        sender.proc.command(f"dial {target.address}")
        try:
            _, _, line = sender.proc.wait(
                "connected or dial_failed",
                lambda o: o.get("peer") == target.peer_id and o.get("event") in ("connected", "dial_failed"),
                timeout, mark)
            if line["event"] == "connected":
                return True
        except Timeout:
            pass
        time.sleep(1.0)
    return target.peer_id in sender.peers


def phase_kills(cl, args):
    rng = random.Random(args.rng_seed)
    s, r = cl.nodes[2], cl.nodes[3]
    candidates = [n for n in cl.nodes[1:] if n not in (s, r)]
    problems = []
    if not ensure_connected(s, r):
        return [f"{s.name} could not connect to {r.name}"], {}
    # S floods R without pause for the whole phase: a flood of --feed-count,
    # then the next once its `flood_done` arrives (after --feed-gap).
    feeding = threading.Event()
    feeding.set()
    feed_lines = []

    def feed():
        since = s.proc.mark()
        while feeding.is_set():
            s.proc.command(f"flood {r.peer_id} {PROTOCOL} {args.feed_count} {args.flood_size}")
            try:
                index, _, line = s.proc.wait(
                    "flood_done to R", lambda o: o.get("event") == "flood_done" and o.get("peer") == r.peer_id,
                    args.flood_timeout, since)
            except Timeout as e:
                problems.append(f"flood to {r.name}: {e}")
                return
            since = index + 1
            feed_lines.append(line)
            time.sleep(args.feed_gap)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    victim_floods = []  # (victim node, flood_done line)
    cycles = []
    recover = []
    for cycle in range(1, args.cycles + 1):
        v = rng.choice(candidates)
        info = {"cycle": cycle, "victim": v.name}
        if ensure_connected(s, v):
            with v.lock:
                before = set(v.flood_rx)
            mark = s.proc.mark()
            s.proc.command(f"flood {v.peer_id} {PROTOCOL} {args.flood_count} {args.flood_size}")
            # Kill once V is taking the flood (its first message printed), or after 5 s.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with v.lock:
                    if any(k[0] == s.peer_id for k in set(v.flood_rx) - before):
                        break
                time.sleep(0.01)
        else:
            # Not a failure: V (or S) may be at its max_peers. No flood to V this cycle.
            mark = None
            info["victim_unreachable"] = True
        time.sleep(rng.uniform(0.0, 0.2))
        t_kill = time.monotonic()
        v.proc.kill9()
        if mark is not None:
            _, _, line = s.proc.wait(
                "flood_done to V", lambda o: o.get("event") == "flood_done" and o.get("peer") == v.peer_id,
                args.flood_timeout, mark)
            victim_floods.append((v, line))
            info["to_victim"] = {"flood": line["flood"], "sent_ok": line["sent_ok"], "failed": line["failed"],
                                 "first_error": line["first_error"]}
            info["s_disconnect_seen"] = any(o.get("event") == "disconnected" and o.get("peer") == v.peer_id
                                            for _, o in s.proc.lines[mark:])
        v.proc.stderr.close()
        cl.spawn(v)
        cl.wait_listening(v)
        t_listen = time.monotonic()
        deadline = t_listen + args.recover_timeout
        while v.reached is None and time.monotonic() < deadline:
            time.sleep(0.05)
        took = (v.reached - t_listen) if v.reached is not None else None
        if took is None:
            problems.append(f"cycle {cycle}: restarted {v.name} not at >= {args.min_peers} peers within "
                            f"{args.recover_timeout} s")
        else:
            recover.append(took)
        info["restart_to_min_peers_secs"] = round(took, 2) if took is not None else None
        cycles.append(info)
        print(f"  cycle {cycle}: killed {v.name}; restarted after {time.monotonic() - t_kill:.1f} s; "
              f"at >= {args.min_peers} peers {info['restart_to_min_peers_secs']} s after listening; "
              f"to victim {info.get('to_victim')}", flush=True)
        time.sleep(args.cycle_pause)
    feeding.clear()
    feeder.join(timeout=args.flood_timeout + 5)

    def missing_for(target, line):
        ok = set(range(line["count"])) - failed_set(line["failed_ranges"])
        with target.lock:
            got = set(target.flood_rx.get((s.peer_id, line["flood"]), set()))
        return ok - got, got - ok

    # Wait for R to print all it was sent Ok.
    deadline = time.monotonic() + args.delivery_timeout
    while time.monotonic() < deadline:
        if all(not missing_for(r, line)[0] for line in feed_lines):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    lost, examples, after_fail = 0, [], 0
    for line in feed_lines:
        miss, extra = missing_for(r, line)
        after_fail += len(extra)
        lost += len(miss)
        if miss:
            examples.append((line["flood"], sorted(miss)[:10]))
    lost_killed = 0
    for v, line in victim_floods:
        miss, extra = missing_for(v, line)
        lost_killed += len(miss)
        after_fail += len(extra)
    sent_ok = sum(line["sent_ok"] for line in feed_lines)
    figures = {
        "sender": s.name, "receiver": r.name, "cycles": args.cycles,
        "floods_to_receiver": len(feed_lines), "feed_count": args.feed_count, "flood_size": args.flood_size,
        "sent_ok_to_receiver": sent_ok, "failed_to_receiver": sum(line["failed"] for line in feed_lines),
        "lost": lost, "lost_examples": examples, "duplicates": r.flood_dups,
        "victim_flood_count": args.flood_count,
        "sent_ok_to_victims": sum(line["sent_ok"] for _, line in victim_floods),
        "failed_to_victims": sum(line["failed"] for _, line in victim_floods),
        "lost_with_killed_receiver": lost_killed,
        "delivered_though_send_failed": after_fail,
        "cycles_without_victim_flood": sum(1 for c in cycles if c.get("victim_unreachable")),
        "restart_to_min_peers_ms": summary_ms(recover),
        "per_cycle": cycles,
    }
    if lost:
        problems.append(f"{lost} messages sent Ok to {r.name} never printed (floods, first seqs: {examples[:3]})")
    if r.flood_dups:
        problems.append(f"{r.flood_dups} duplicate messages at {r.name}")
    if sent_ok == 0:
        problems.append("no send to the receiver returned Ok")
    return problems, figures


# ---------------------------------------------------------------- charts


def svg_chart(path, title, xlabel, ylabel, series, xmax=None, ymax=None, step=False):
    """A line chart, hand-written SVG. series: [(label, colour, [(x, y)])]."""
    w, h, left, right, top, bottom = 720, 420, 70, 20, 40, 55
    pts = [p for _, _, s in series for p in s]
    if not pts:
        return
    xmax = xmax or max(x for x, _ in pts) or 1
    ymax = ymax or max(y for _, y in pts) or 1

    def nice(v):
        for e in range(-3, 8):
            for m in (1, 2, 2.5, 5):
                c = m * 10 ** e
                if v / c <= 6:
                    return c
        return v / 5

    xs, ys = nice(xmax), nice(ymax)
    xmax = xs * (int(xmax / xs) + (0 if xmax % xs == 0 else 1))
    ymax = ys * (int(ymax / ys) + (0 if ymax % ys == 0 else 1))

    def px(x):
        return left + (w - left - right) * x / xmax

    def py(y):
        return h - bottom - (h - top - bottom) * y / ymax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    k = 0
    while k * xs <= xmax + 1e-9:
        x = k * xs
        out.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{h - bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x:g}</text>')
        k += 1
    k = 0
    while k * ys <= ymax + 1e-9:
        y = k * ys
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{w - right}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        k += 1
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 15}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {(top + h - bottom) / 2})">{ylabel}</text>')
    for n, (label, colour, s) in enumerate(series):
        if not s:
            continue
        coords = []
        prev = None
        for x, y in s:
            if step and prev is not None:
                coords.append(f"{px(x):.1f},{py(prev):.1f}")
            coords.append(f"{px(x):.1f},{py(y):.1f}")
            prev = y
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{" ".join(coords)}"/>')
        ly = top + 16 + 16 * n
        out.append(f'<line x1="{w - right - 230}" y1="{ly - 4}" x2="{w - right - 210}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right - 204}" y="{ly}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def cdf(secs):
    ms = sorted(s * 1000 for s in secs)
    n = len(ms)
    if n > 400:  # thin it out, keeping the tail
        idx = sorted(set([int(i * (n - 1) / 399) for i in range(400)] + list(range(n - 20, n))))
        return [(ms[i], 100.0 * (i + 1) / n) for i in idx]
    return [(v, 100.0 * (i + 1) / n) for i, v in enumerate(ms)]


# ---------------------------------------------------------------- main


def draw_charts(out, results, last, every):
    mode, n = results["mode"], results["nodes"]
    rate = results.get("phases", {}).get("broadcast", {}).get("figures", {}).get("rate_per_sec")
    label = f"{mode}, N={n}" + (f", {rate:g} msg/s" if rate else "")
    if last:
        svg_chart(os.path.join(out, "broadcast-latency.svg"),
                  f"Broadcast latency CDF ({label})", "latency from publish (ms)", "% of messages / deliveries",
                  [("last node, per message", "#c0392b", cdf(last)),
                   ("every delivery", "#2471a3", cdf(every))], ymax=100)
    samples = results.get("peers_over_time")
    took = results.get("phases", {}).get("min_peers", {}).get("figures", {}).get("took_secs")
    if samples and took:
        samples = [s for s in samples if s["t"] <= took + 15]  # the start, and a little after
    if samples:
        m = results["min_peers"]
        svg_chart(os.path.join(out, "peers-over-time.svg"),
                  f"Connected peers while the cluster starts ({label}, M={m})", "seconds since the first node started",
                  "peers / nodes",
                  [("nodes started", "#999999", [(s["t"], s["started"]) for s in samples]),
                   (f"nodes with >= {m} peers", "#27ae60", [(s["t"], s["at_least_m"]) for s in samples]),
                   ("peers: min over nodes", "#c0392b", [(s["t"], s["min"]) for s in samples]),
                   ("peers: median", "#2471a3", [(s["t"], s["p50"]) for s in samples])], step=True)


def charts_main(argv):
    """`cluster.py charts DIR`: draws the charts again from DIR/cluster-results.json."""
    out = argv[0]
    with open(os.path.join(out, "cluster-results.json")) as f:
        results = json.load(f)
    b = results.get("phases", {}).get("broadcast", {}).get("figures", {})
    last = [v / 1000 for v in b.get("last_node_latency_ms_by_seq", []) if v is not None]
    every = [v / 1000 for v in b.get("every_delivery_latency_ms_percentiles", [])]
    draw_charts(out, results, last, every)
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "hub":
        return hub_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "charts":
        return charts_main(sys.argv[2:])
    p = argparse.ArgumentParser()
    p.add_argument("--peer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default=f"lqs{os.getpid()}")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--min-peers", type=int, default=6)
    p.add_argument("--max-peers", type=int, default=50)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="publishes per second")
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--loopback", action="store_true")
    p.add_argument("--keep", action="store_true", help="accepted here; cluster.sh keeps or removes the dir")
    p.add_argument("--same-subnet", action="store_true",
                   help="namespace modes: all processes in one /24 (default: a /24 each)")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--batch-pause", type=float, default=0.5)
    p.add_argument("--base-port", type=int, default=47000)
    p.add_argument("--connect-timeout", type=float, default=300.0)
    p.add_argument("--mesh-timeout", type=float, default=120.0)
    p.add_argument("--mesh-settle", type=float, default=3.0)
    p.add_argument("--idle-secs", type=float, default=10.0,
                   help="before publishing, measure the cluster at rest for this long (0: skip)")
    p.add_argument("--idle-settle-secs", type=float, default=0.0,
                   help="wait this long before that measurement (the start's connections end)")
    p.add_argument("--delivery-timeout", type=float, default=120.0)
    p.add_argument("--score-every", type=float, default=2.0,
                   help="while broadcasting, poll every receiver's gossip score of the publisher (0: never)")
    p.add_argument("--flood-count", type=int, default=20000, help="messages to each victim per cycle")
    p.add_argument("--feed-count", type=int, default=1000, help="messages per flood to the receiver")
    p.add_argument("--feed-gap", type=float, default=0.1, help="seconds between floods to the receiver")
    p.add_argument("--flood-size", type=int, default=256)
    p.add_argument("--flood-timeout", type=float, default=300.0)
    p.add_argument("--recover-timeout", type=float, default=120.0)
    p.add_argument("--cycle-pause", type=float, default=1.0)
    p.add_argument("--rng-seed", type=int, default=None)
    p.add_argument("--phases", default="min_peers,broadcast,kills")
    p.add_argument("--node-args", default="",
                   help="more `peer` options for every process, e.g. \"--ping-timeout-ms 30000\"")
    args = p.parse_args()
    if args.nodes < 4:
        sys.exit("--nodes must be at least 4 (publisher, sender, receiver, a victim)")
    os.makedirs(args.out, exist_ok=True)

    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    mode, why = pick_mode(args)
    print(f"MODE {mode} ({why}); nodes {args.nodes} + seed, min_peers {args.min_peers}, "
          f"latency {args.latency_ms if mode != 'loopback' else 0} ms one way", flush=True)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "commit": sh("git", "rev-parse", "--short", "HEAD", check=False).stdout.strip() or None,
               "peer": args.peer, "mode": mode, "mode_why": why, "nodes": args.nodes,
               "min_peers": args.min_peers, "max_peers": args.max_peers, "node_args": args.node_args,
               "latency_ms_one_way": args.latency_ms if mode != "loopback" else 0,
               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "phases": {}}
    net = Net(mode, args.nodes + 1, args.latency_ms, args.prefix, args.base_port, args.out, args.same_subnet)
    cl = None
    failed = []
    samples = []
    latencies = ([], [])
    exit_code = 0
    sampler_stop = None
    try:
        try:
            net.setup()
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            print(f"SETUP FAILED: {e}", flush=True)
            exit_code = 2
            return exit_code
        cl = Cluster(args, net)
        wanted = [x for x in args.phases.split(",") if x]
        for name in ("min_peers", "broadcast", "kills"):
            if name not in wanted:
                continue
            print(f"== {name}", flush=True)
            started = time.monotonic()
            try:
                if name == "min_peers":
                    problems, figures, sampler_stop = phase_min_peers(cl, args, samples)
                elif name == "broadcast":
                    problems, figures, latencies = phase_broadcast(cl, args)
                else:
                    problems, figures = phase_kills(cl, args)
            except (Timeout, RuntimeError, KeyError, ValueError) as e:
                problems, figures = [f"aborted: {e}"], {}
            figures["took_secs"] = round(time.monotonic() - started, 1)
            figures["hub"] = net.hub_counters()
            figures["cpu_secs_so_far"] = {
                "peers_alive": round(sum(cpu_secs(n.proc.pid) for n in cl.nodes if n.proc and n.proc.alive()), 1),
                "hub": round(cpu_secs(net.hub.pid), 1) if net.hub else None,
                "script": round(time.process_time(), 1)}
            figures["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
            verdict = "FAIL" if problems else "PASS"
            results["phases"][name] = {"verdict": verdict, "problems": problems, "figures": figures}
            shown = {k: v for k, v in figures.items() if not k.endswith(("_by_seq", "_percentiles", "_at_receivers"))
                     and k != "per_cycle"}
            print(f"{verdict} {name}: {json.dumps(shown)}", flush=True)
            for pr in problems:
                print(f"    {pr}", flush=True)
            if problems:
                failed.append(name)
            if name == "min_peers" and (figures.get("cluster_time_to_min_peers_secs") is None
                                        and not cl.nodes[0].peer_id):
                break
        results["tun_drops"] = net.tun_drops()
    except KeyboardInterrupt:
        print("interrupted; cleaning up", flush=True)
        exit_code = 130
    finally:
        if sampler_stop is not None:
            sampler_stop.set()
        if cl is not None:
            cl.stop_all()
            results["line_counts"] = dict(sum((n.counts for n in cl.nodes), collections.Counter()))
        results["hub"] = net.stop_hub()
        net.close()
        results["peers_over_time"] = samples
        with open(os.path.join(args.out, "cluster-results.json"), "w") as f:
            json.dump(results, f, indent=2)
    last, every = latencies
    draw_charts(args.out, results, last, every)
    if exit_code:
        return exit_code
    if results.get("hub") is not None:
        print(f"hub (after the last phase): {json.dumps(results['hub'])}")
    print("== summary")
    for name, r in results["phases"].items():
        print(f"{r['verdict']} {name}")
    print_table(results)
    print(f"results: {os.path.join(args.out, 'cluster-results.json')}")
    return 1 if failed else 0


def print_table(results):
    ph = results["phases"]
    mp = ph.get("min_peers", {}).get("figures", {})
    bc = ph.get("broadcast", {}).get("figures", {})
    kl = ph.get("kills", {}).get("figures", {})
    t = mp.get("per_node_time_to_min_peers_ms") or {}
    lat = bc.get("last_node_latency_ms") or {}
    print(f"| mode | N | min_peers | time to min_peers p50 / max (per node) | all nodes | "
          f"broadcast last-node p50 / p99 / max | loss | dups | direct-send loss / cycles |")
    print(f"| {results['mode']} | {results['nodes']} | {results['min_peers']} | "
          f"{t.get('p50')} / {t.get('max')} ms | {mp.get('cluster_time_to_min_peers_secs')} s | "
          f"{lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} ms | {bc.get('lost_messages')} | "
          f"{bc.get('duplicates')} | {kl.get('lost')} / {kl.get('cycles')} |")


if __name__ == "__main__":
    sys.exit(main())
