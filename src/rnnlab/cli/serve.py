"""`rnnlab serve RUN [RUN ...]`: the playground in the browser, on 127.0.0.1 unless told otherwise.

Every run is loaded and verified before the server listens, so a missing or corrupt run is one
`error:` line and exit 3, and a busy port one line and exit 2; then it prints the address and
serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import torch

from rnnlab.api import load
from rnnlab.cli.flags import IMPL_HELP, RUN_HELP, stderr
from rnnlab.errors import UsageError
from rnnlab.model import IMPLS
from rnnlab.serve.config import ServeConfig

DEFAULTS = ServeConfig()


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="the playground: next characters, surprisal and hidden units in the browser",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--host",
        default=DEFAULTS.listen_host,
        help="address to listen on (default: 127.0.0.1, this machine only); another address "
        "lets other machines query the models",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free one)")
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS.workers,
        help=f"threads running the models at once (default: {DEFAULTS.workers})",
    )
    p.add_argument(
        "--queue",
        type=int,
        default=DEFAULTS.queue,
        help="requests that may wait for a worker; beyond that the server answers 503 "
        f"(default: {DEFAULTS.queue})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        help=f"seconds one request may take (default: {DEFAULTS.timeout:g})",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept this Host name (e.g. the machine's name on your network); repeatable",
    )
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or a one-line UsageError (port busy, bad address)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise UsageError(
            f"cannot listen on {host!r}: {getattr(e, 'strerror', None) or e}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port"
        ) from None
    return sock


def url_of(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # what a browser on this machine can open
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def cmd_serve(args: argparse.Namespace) -> int:
    config = ServeConfig(
        workers=args.workers,
        queue=args.queue,
        timeout=args.timeout,
        listen_host=args.host,
        allow_hosts=tuple(args.allow_host),
    )
    sock = bind(args.host, args.port)  # a busy port fails at once, before the slow part
    try:
        return _serve(args, config, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, config: ServeConfig, sock: socket.socket) -> int:
    # The web framework is imported here only: every other command starts without it.
    import uvicorn

    from rnnlab.serve.app import create_app, run_names

    models = run_names([load(path, device=args.device, impl=args.impl) for path in args.runs])
    if not args.threads:  # the workers share the cores rather than each taking all of them
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // args.workers))
    app = create_app(models, config)
    port = sock.getsockname()[1]
    if not is_loopback(args.host):
        stderr(
            f"warning: listening on {args.host}: anyone who can reach this machine on port "
            f"{port} can query these models"
        )
    print(
        f"rnnlab playground: {len(models)} run{'s' if len(models) > 1 else ''} "
        f"({', '.join(models)}) at {url_of(args.host, port)}  (Ctrl-C to stop)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # never trust X-Forwarded-*: nothing sits in front of it
            server_header=False,
            lifespan="on",
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an error
        pass
    stderr("stopped")
    return 0


COMMANDS = {"serve": cmd_serve}
