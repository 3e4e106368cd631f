"""Drives `peer` processes for the chaos and soak scripts.

A `PeerProc` starts one `peer --json` (optionally inside a network namespace with
`ip netns exec`, which execs the binary, so the process id is the peer's), writes
commands to its stdin and reads its JSON lines on a thread, stamping each with the
monotonic time it arrived. Scripts wait for lines with `wait`, which never hangs:
every wait has a deadline and raises `Timeout` with what was seen.
"""

import json
import os
import signal
import subprocess
import threading
import time


class Timeout(Exception):
    """A line did not arrive in time."""


class PeerProc:
    """One running `peer`. `keep(obj)` decides which lines are stored (all by
    default); `on_line(t, obj)` sees every line."""

    def __init__(self, binary, args, name, log_dir, netns=None, keep=None, on_line=None,
                 log_skip=("message", "flood_done")):
        self.name = name
        # Every line but `log_skip` events also goes to <name>.stdout, stamped.
        self.log = open(os.path.join(log_dir, f"{name}.stdout"), "a")
        self.log_skip = set(log_skip)
        self.started = time.time()
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.cmd = prefix + [binary, "--json"] + list(args)
        self.stderr = open(os.path.join(log_dir, f"{name}.stderr"), "a")
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.keep = keep
        self.on_line = on_line
        self.lines = []  # (arrival time, object)
        self.cond = threading.Condition()
        self.closed = False
        self.write_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            now = time.monotonic()
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"event": "_not_json", "raw": raw.rstrip("\n")}
            if obj.get("event") not in self.log_skip:
                self.log.write(f"{time.time():.3f} {raw.rstrip()}\n")
                self.log.flush()
            if self.on_line is not None:
                self.on_line(now, obj)
            if self.keep is None or self.keep(obj):
                with self.cond:
                    self.lines.append((now, obj))
                    self.cond.notify_all()
        self.log.close()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def mark(self):
        """Index of the next line; pass it to `wait` to see only later lines."""
        with self.cond:
            return len(self.lines)

    def wait(self, what, pred, timeout, since=0):
        """The first stored line at index >= `since` for which `pred(obj)` holds:
        (index, arrival time, object)."""
        deadline = time.monotonic() + timeout
        index = since
        with self.cond:
            while True:
                while index < len(self.lines):
                    t, obj = self.lines[index]
                    if pred(obj):
                        return index, t, obj
                    index += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed and index >= len(self.lines)):
                    tail = [o for _, o in self.lines[-5:]]
                    raise Timeout(f"{self.name}: no {what} within {timeout:.1f} s; last lines: {tail}")
                self.cond.wait(left)

    def wait_event(self, event, timeout, since=0, peer=None):
        def pred(obj):
            return obj.get("event") == event and (peer is None or obj.get("peer") == peer)

        return self.wait(f"{event}" + (f" of {peer[-8:]}" if peer else ""), pred, timeout, since)

    def listening(self, timeout=20):
        """(address, peer id) from the first `listening` line."""
        _, _, obj = self.wait_event("listening", timeout)
        address = obj["address"]
        return address, address.rsplit("/p2p/", 1)[1]

    def command(self, line):
        """Writes one command; False if the process no longer reads."""
        with self.write_lock:
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def stats(self, timeout=10):
        since = self.mark()
        if not self.command("stats"):
            raise Timeout(f"{self.name}: stdin closed")
        return self.wait_event("stats", timeout, since)[2]

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)

    def quit(self, timeout=10):
        if self.alive():
            self.command("quit")
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()

    def rss_kib(self):
        """Resident set size from /proc, or None if the process is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def open_fds(self):
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None


def mirror_mismatches(stats_by_id):
    """At rest, every pooled send stream from A to B is one inbound stream at B
    from A. Given {peer id: stats line} for hosts that see each other, returns the
    pairs where the counts differ, as (A, B, A's pool streams to B, B's inbound
    streams from A)."""
    mismatches = []
    for a, stats in stats_by_id.items():
        for entry in stats["per_peer"]:
            b = entry["peer"]
            if b not in stats_by_id:
                continue
            pooled = sum(p["current"] for p in entry["pools"])
            inbound = next(
                (e["inbound_streams"] for e in stats_by_id[b]["per_peer"] if e["peer"] == a),
                0,
            )
            if pooled != inbound:
                mismatches.append((a, b, pooled, inbound))
    return mismatches
