"""What keeps a model server on a port safe to leave running: who may talk to it, and how much.

The playground listens on a TCP port, so any web page the user opens could try to reach it: a
hostile page can make the browser send requests to 127.0.0.1 (cross-site requests), or point a
domain it controls at 127.0.0.1 and read the answers as same-origin (DNS rebinding). So:

- `Guard` (ASGI middleware) refuses a Host header outside an allow-list (DNS rebinding: the
  hostile domain's name arrives in Host), refuses a state-changing or compute request whose
  Origin is another site (403), caps the body size (413) before the app reads it, and adds the
  security headers to every answer: a Content-Security-Policy that allows only the page's own
  files (no inline script, no framing), nosniff, no referrer.
- `ComputePool` runs model work off the event loop on a fixed number of threads with a short
  queue; a request beyond that is answered 503 with Retry-After at once, and a request that runs
  past the time limit gets 503 too, so the server never hangs on a pile-up.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import torch

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# Only the page's own files: scripts and styles from this server, no inline script, no eval, no
# plugins, never inside a frame (clickjacking), forms and fetches only to this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def host_name(host: str) -> str:
    """The host part of a Host header or netloc, lower-cased, without the port.

    `[::1]:8000` -> `[::1]`, `LocalHost:80` -> `localhost`, `127.0.0.1` -> `127.0.0.1`.
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts(listen_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names the server answers to: loopback names, the address it listens on, extras.

    A bare IPv6 address is written with brackets, as it appears in a Host header.
    """
    names = set(LOOPBACK_HOSTS)
    for h in (listen_host, *extra):
        h = h.strip().lower()
        if not h:
            continue
        names.add(f"[{h}]" if ":" in h and not h.startswith("[") else host_name(h))
    # A wildcard address is not a name a browser sends; its Host is whatever the client used.
    names -= {"0.0.0.0", "[::]"}
    return frozenset(names)


def _error(status: int, message: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
        ],
    }
    return start, body


class Guard:
    """Host allow-list, same-origin check, body-size cap and security headers (pure ASGI).

    Args:
        app: the application behind it.
        hosts: Host names accepted (see `allowed_hosts`); anything else is 400.
        max_body: the largest request body in bytes; larger is 413, before the app sees it.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str], max_body: int) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the playground has none: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.refusal(scope["method"], headers, scope.get("scheme", "http"))
        if problem is not None:
            await self._reply(send, *problem)
            return
        if scope["method"] not in SAFE_METHODS:
            body = await self._read_body(headers, receive)
            if body is None:
                await self._reply(
                    send, 413, f"request body too large: at most {self.max_body:,} bytes"
                )
                return
            receive = _replay(body, receive)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(
        self, method: str, headers: dict[str, str], scheme: str = "http"
    ) -> tuple[int, str] | None:
        """(status, message) when the request must be refused before routing, else None.

        Same origin means the same scheme, host and port as the request's own (RFC 6454): the
        page this server sent. A browser sends Origin on every cross-origin POST.
        """
        host = headers.get("host")
        if not host or host_name(host) not in self.hosts:
            return 400, "Host header not allowed: open the playground at the address it printed"
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            same = (
                parts.scheme == scheme
                and parts.netloc.lower() == host.strip().lower()
                and host_name(parts.netloc) in self.hosts
            )
            if not same:
                return 403, "cross-origin request refused: use the playground's own page"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site request refused: use the playground's own page"
        return None

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed `max_body`."""
        declared = headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return None
            except ValueError:
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _reply(send: Send, status: int, message: str) -> None:
        start, body = _error(status, message)
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then waits on the connection."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the body is consumed: what comes next is the disconnect

    return replay


class Busy(Exception):
    """The pool is full or the work ran past its time: answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ComputePool:
    """A fixed number of worker threads for model work, a short queue, and a time limit.

    At most `workers + queue` jobs are held at once; one more is refused at once (`Busy`)
    rather than queued without bound. A slot is freed when its job ends, not when its request
    gives up: a thread cannot be stopped, so a job past the time limit still holds its slot
    until it finishes, and the pool never runs more jobs than it has threads.
    """

    def __init__(self, workers: int, queue: int, timeout: float) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None  # started by the first job
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Jobs running or queued now."""
        return self._held

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._held -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread; `Busy` if the pool is full or it takes too long."""
        with self._lock:
            if self._held >= self.capacity:
                raise Busy(
                    f"the server is busy ({self.capacity} requests in progress): retry shortly"
                )
            self._held += 1
            if self._executor is None:  # first job, or the first since a shutdown
                # OpenMP's thread count is per thread: a worker starts with the machine's, not
                # the one `--threads` set, and a product split another way rounds differently.
                # Each worker takes the process's, so the server answers what the CLI prints.
                self._executor = ThreadPoolExecutor(
                    self.workers,
                    thread_name_prefix="rnnlab-serve",
                    initializer=torch.set_num_threads,
                    initargs=(torch.get_num_threads(),),
                )
            executor = self._executor
        try:
            future = executor.submit(fn, *args)
        except BaseException:
            self._release(Future())
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except asyncio.TimeoutError:
            future.cancel()  # a job still queued never starts; a running one frees its slot later
            raise Busy(
                f"the request took longer than {self.timeout:g} s: ask for fewer steps or a "
                "shorter text",
                retry_after=max(1, round(self.timeout)),
            ) from None

    def shutdown(self) -> None:
        """Stop the threads once their jobs end (the app's lifespan ends); a later job restarts
        them, as when a test client runs the lifespan around each request."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
