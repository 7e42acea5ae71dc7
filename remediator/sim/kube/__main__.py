"""``python -m remediator.sim.kube``: run the Kubernetes API emulator until SIGINT/SIGTERM.

Prints the URL, optionally seeds the demo cluster and writes a kubeconfig, so another
process (the worker in ``--simulate`` mode, kubectl, the demo script) can use it and drive
faults through the admin API (``POST /_emulator/faults``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from remediator.sim.kube.cluster import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediator.sim.kube",
                                     description="Kubernetes API emulator on loopback.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--seed", choices=["demo", "none"], default="none", help="seed the demo cluster")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this emulator to this path")
    parser.add_argument("--pod-ready-seconds", type=float, default=0.2, help="time from scheduling to Ready")
    parser.add_argument("--termination-seconds", type=float, default=0.5,
                        help="time a deleted pod's containers take to exit on SIGTERM (default 0.5)")
    args = parser.parse_args(argv)
    try:
        emu = Emulator(host=args.host, port=args.port, pod_ready_seconds=args.pod_ready_seconds,
                       termination_seconds=args.termination_seconds).start()
    except (ValueError, OSError) as exc:
        print(f"error: cannot start the emulator: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        if args.seed == "demo":
            emu.seed_demo()
        if args.kubeconfig:
            path = emu.write_kubeconfig(args.kubeconfig)
            print(f"kubeconfig: {path}", flush=True)
        print(emu.url, flush=True)
        done.wait()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
