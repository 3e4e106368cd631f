"""Redial storm check (issue: hostile networks), run by scripts/storm.sh, not in CI.

A victim V (default limits: 20 peers) is filled with 20 peers; then a peer D
starts with `--required V`. V refuses D after every handshake and tells it why;
D must back off on its Fibonacci schedule (with the default 1 s unit: dials at
about 0, 1, 2, 4, 7, 12, 20 s, so at most 8 in 25 s) and its application must
hear no `connected` / `disconnected` pair. V's CPU time is read from /proc before
and during the storm: the extra cost of D on V must stay under 2 % of one core.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerproc import PeerProc  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--fillers", type=int, default=20)
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="storm-")
    procs = []
    try:
        victim = PeerProc(args.peer, ["--quiet-messages"], "victim", out)
        procs.append(victim)
        address, _ = victim.listening()
        for i in range(args.fillers):
            p = PeerProc(args.peer, ["--dial", address, "--quiet-messages"], f"filler{i:02}", out)
            procs.append(p)
        deadline = time.monotonic() + 30
        while victim.stats()["connected_peers"] < args.fillers:
            if time.monotonic() > deadline:
                print("FAIL: the victim never got its fillers")
                return 2
            time.sleep(0.2)
        # Baseline: the victim's CPU with its peers idle.
        base_start = cpu_secs(victim.pid)
        time.sleep(args.seconds / 2)
        base_rate = (cpu_secs(victim.pid) - base_start) / (args.seconds / 2)
        start_cpu = cpu_secs(victim.pid)
        dialler = PeerProc(args.peer, ["--required", address], "dialler", out)
        procs.append(dialler)
        time.sleep(args.seconds)
        storm_rate = (cpu_secs(victim.pid) - start_cpu) / args.seconds
        lines = [o for _, o in dialler.lines]
        failed = [o for o in lines if o.get("event") == "dial_failed"]
        causes = {}
        for o in failed:
            causes[o.get("cause")] = causes.get(o.get("cause"), 0) + 1
        pairs = sum(1 for o in lines if o.get("event") in ("connected", "disconnected"))
        required = sum(1 for o in lines if o.get("event") == "required_connected")
        refused = [o for _, o in victim.lines if o.get("event") == "refused"]
        extra = max(0.0, storm_rate - base_rate) * 100
        print(f"dialler: {len(failed)} failed attempts in {args.seconds:.0f} s, causes {causes}; "
              f"{pairs} connected/disconnected lines, {required} required_connected")
        print(f"victim: {len(refused)} refused lines standing for "
              f"{sum(o.get('count', 1) for o in refused)} refusals; CPU {base_rate * 100:.2f} % of a core "
              f"idle, {storm_rate * 100:.2f} % during the storm (+{extra:.2f} %)")
        ok = len(failed) <= 8 and pairs == 0 and required == 0 and extra < 2.0
        print("PASS" if ok else "FAIL", f"(logs: {out})")
        return 0 if ok else 1
    finally:
        for p in procs:
            p.quit()


if __name__ == "__main__":
    sys.exit(main())
