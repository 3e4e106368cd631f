"""A lossy, slow link between two network namespaces, in user space.

Used by chaos.sh when the kernel has no `sch_netem` (`tc qdisc ... netem` fails with
"Specified qdisc kind is unknown"). Two persistent TUN devices, one in each
namespace, carry the IP packets of one subnet; this process reads every packet
from one device and writes it to the other after `--delay-ms`, dropping each one
with probability `--loss-percent` (independently, like netem's `loss`). Both
directions get the same treatment, as `netem` on both ends of a veth pair would.
A queue longer than `--queue` packets per direction drops at the tail.

On SIGTERM or SIGINT it prints one JSON line with its counters and exits.

    linkemu.py --ns-a NS --dev-a DEV --ns-b NS --dev-b DEV --delay-ms 50 --loss-percent 5
"""

import argparse
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def attach_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns-a", required=True)
    parser.add_argument("--dev-a", required=True)
    parser.add_argument("--ns-b", required=True)
    parser.add_argument("--dev-b", required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--loss-percent", type=float, default=5.0)
    parser.add_argument("--queue", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    enter_netns(f"/var/run/netns/{args.ns_a}")
    fd_a = attach_tun(args.dev_a)
    enter_netns(f"/var/run/netns/{args.ns_b}")
    fd_b = attach_tun(args.dev_b)
    if libc.setns(home, CLONE_NEWNET) != 0:
        sys.exit("cannot return to the original network namespace")
    os.close(home)

    delay = args.delay_ms / 1000.0
    loss = args.loss_percent / 100.0
    out_of = {fd_a: fd_b, fd_b: fd_a}
    label = {fd_a: "a_to_b", fd_b: "b_to_a"}
    counts = {
        name: {"packets": 0, "bytes": 0, "max_packet_bytes": 0, "dropped_loss": 0, "dropped_queue": 0,
               "forwarded": 0}
        for name in label.values()
    }
    queued = {fd_a: 0, fd_b: 0}  # per source
    heap = []  # (due, order, source fd, packet)
    order = 0
    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"event": "ready", "delay_ms": args.delay_ms, "loss_percent": args.loss_percent}), flush=True)

    while not stop:
        now = time.monotonic()
        timeout = max(0.0, heap[0][0] - now) if heap else 0.5
        try:
            readable, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                c = counts[label[fd]]
                c["packets"] += 1
                c["bytes"] += len(packet)
                c["max_packet_bytes"] = max(c["max_packet_bytes"], len(packet))
                if rng.random() < loss:
                    c["dropped_loss"] += 1
                    continue
                if queued[fd] >= args.queue:
                    c["dropped_queue"] += 1
                    continue
                queued[fd] += 1
                order += 1
                heapq.heappush(heap, (now + delay, order, fd, packet))
        while heap and heap[0][0] <= now:
            _, _, source, packet = heapq.heappop(heap)
            queued[source] -= 1
            try:
                os.write(out_of[source], packet)
                counts[label[source]]["forwarded"] += 1
            except OSError:
                counts[label[source]]["dropped_queue"] += 1
    print(json.dumps({"event": "counters", **counts}), flush=True)


if __name__ == "__main__":
    main()
