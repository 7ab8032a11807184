"""Image downloads with libcurl: one multi handle on one thread, many transfers at once.

libcurl (through pycurl) does what a worker's download threads and its
hand-written fast lane did before, in C: http and https, HTTP/2 multiplexing
where the server offers it and HTTP/1.1 keep-alive otherwise, asynchronous
name lookups. Python keeps what is policy:

- the address guard, on every socket libcurl opens (OPENSOCKETFUNCTION) and
  again on the peer of every connection a request goes out on, new or reused
  (PREREQFUNCTION): what is checked is what is connected to;
- redirects, followed here hop by hop (each hop a new request through the
  guard, under the same deadline), never by libcurl; a hop waits for the
  caller's verdict on its target (scope, robots.txt) without holding the loop;
- the limits: declared and decoded size, a read timeout, and
  ``download.deadline`` as a hard bound on the whole download, whatever the
  bytes do (libcurl's TIMEOUT_MS per hop, and a sweep here behind it);
- gzip, deflate and brotli bodies, decoded by zlib and brotli from
  ``crawler.fetch.contentencoding``, which knows a compressed body cut short;
- what an image must be, and its storage (``crawler.worker.sink``);
- a bandwidth cap for the whole worker, by pausing transfers.

The loop drives libcurl through its socket interface: libcurl says which
sockets to watch and when its next timer is due, a selector waits on them and
on a wake-up socket for new work.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable

import pycurl

from crawler.config import Limits
from crawler.errors import StorageError
from crawler.fetch.callbacks import RATE_BURST, TransferCallbacks, downloads_at_once
from crawler.fetch.cookiefeed import add_to_jar
from crawler.fetch.curlsetup import (
    PROXY_AUTH_REQUIRED,
    Guard,
    KeptConnections,
    SocketWatch,
    at_the_proxy,
    curl_events,
    default_ca_file,
    failure_cause,
    gives_login_headers,
    header_lines,
    hop_options_vary,
    new_share,
    other_origin,
    proxy_refusal,
    request_url,
    set_common_options,
    set_hop_options,
)
from crawler.fetch.engine import (
    ACCEPT,
    CURLE_HTTP2_STREAM,
    Abandoned,
    HopCheck,
    HopRefusal,
    Report,
    Results,
    SinkFactory,
    Task,
    curl_failure,
    storage_failure,
    too_slow,
)
from crawler.fetch.guard import AddressPolicy
from crawler.fetch.options import RequestOptions
from crawler.fetch.policy import (
    MAX_REDIRECTS,
    TOO_MANY_REDIRECTS,
    redirect_target,
    redirected_to,
)
from crawler.fetch.transfer import Slot, Transfer, failed
from crawler.model.openfiles import out_of_files_reason
from crawler.model.outcome import Attempt, FailureKind

log = logging.getLogger(__name__)

TICK = 0.25  # longest wait in select(), so a stop is seen promptly
SWEEP_EVERY = 0.05  # seconds between checks of read timeouts and deadlines
DEADLINE_SLACK = 0.25  # the sweep cuts what libcurl's own timer has not, this much later
IDLE_PER_SLOT = 2  # connections kept open per transfer slot (least recently used go)
BUFFER_BYTES = 128 * 1024  # libcurl's receive buffer: fewer, larger body callbacks


class CurlEngine:
    """Downloads handed to it with :meth:`submit` until :meth:`close`; see the module doc.

    ``report(results)`` receives every result as (url, attempt) pairs, once per
    turn of the loop (attempt None: not finished because of a stop, to be
    handed back to the master). Every submitted task is reported exactly once.
    ``check_hop(url, verdict, first)`` may refuse a redirect target (None: any target);
    the transfer waits for its verdict off the loop, under its own deadline.

    One piece on purpose: the multi handle, the slots and their transfers, the
    sockets libcurl asked to watch, the timer and the bandwidth budget are the
    state of one event loop, touched only from its thread and by libcurl's
    callbacks in it; what is not that state (the set-up both clients share, the
    error table, the sink) lives in ``curlsetup``, ``engine`` and the worker,
    what one download is (its state, its handle) in ``transfer``, and what libcurl
    tells a transfer as its bytes come (and the bandwidth budget its body spends)
    in ``callbacks``.
    """

    def __init__(self, *, slots: int, new_sink: SinkFactory, limits: Limits, policy: AddressPolicy,
                 options: RequestOptions, report: Report, stop: threading.Event,
                 check_hop: HopCheck | None = None) -> None:
        self._slots = downloads_at_once(slots, options.limit_rate)
        self._limits = limits
        self._policy = policy
        self._options = options
        self._report = report
        self._stop = stop
        self._check_hop = check_hop
        # Transfers waiting for check_hop's verdict on their next hop, by slot: they
        # hold no connection, so they do not count against ``slots``.
        self._parked: dict[Slot, Transfer] = {}
        self._verdicts: queue.SimpleQueue[tuple[Slot, Transfer, str, HopRefusal | None]] = \
            queue.SimpleQueue()
        self._outbox: Results = []
        self._lock = threading.Lock()  # submit() against the end of run()
        self._closing = False
        self._ended = False
        # Tasks, and URLs to drop (a frozenset), in the order they were given: a URL
        # dropped, then submitted again, is dropped before its new task comes.
        self._incoming: queue.SimpleQueue[Task | frozenset[str]] = queue.SimpleQueue()
        # Cookies the master's pages set, for the jar: taken before the tasks that follow.
        self._cookies: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._waiting: collections.deque[Task] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._sockets = SocketWatch(self._selector)  # libcurl's sockets, on the selector
        # When each socket last had bytes to read: a head trickling in is not silent,
        # though libcurl calls back only when one of its lines is whole.
        self._heard: dict[int, float] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._timer_due: float | None = None
        self._free: list[Slot] = []
        self._active: set[Slot] = set()
        self._by_handle: dict[int, Slot] = {}
        # The connections, to look for unasked bytes before an HTTP/1 one is used again.
        # Each slot's connection, and those kept idle: 4,096 was forgotten past 1,365
        # slots (worker.threads), and a stray answer on a forgotten one stored.
        self._kept = KeptConnections(at_least=slots * (1 + IDLE_PER_SLOT))
        self._proxies = options.proxies()
        self._per_hop = hop_options_vary(options, self._proxies)
        self._rate = options.limit_rate
        # libcurl's callbacks for every slot: the guard, and the bandwidth cap, whose
        # paused transfers the loop looks at (the same set, not a copy).
        self._callbacks = TransferCallbacks(
            guard=Guard(policy, self._proxies), kept=self._kept, limits=limits,
            new_sink=new_sink, rate=self._rate)
        self._paused = self._callbacks.paused
        self._share = new_share(options)
        self._headers = header_lines(options, ACCEPT)
        # Without the user's Authorization and Cookie headers: a hop to another origin.
        self._elsewhere_headers = (header_lines(options, ACCEPT, other_origin=True)
                                   if gives_login_headers(options) else None)
        self._ca_file = None if options.ca_bundle else default_ca_file()
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_MAXCONNECTS, max(4, slots * IDLE_PER_SLOT))
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._sockets)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        if options.insecure:
            log.warning("TLS certificates are NOT verified (http.insecure = true): anyone "
                        "on the network path can read and change what is downloaded")

    # ----- called from other threads ------------------------------------------------

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, tasks: list[Task]) -> None:
        """Queue ``tasks``; once the engine has ended they are reported as not finished."""
        with self._lock:
            if not self._ended:
                for task in tasks:
                    self._incoming.put(task)
                self._wake()
                return
        self._report([(task[0], None) for task in tasks])

    def drop(self, urls: Iterable[str]) -> None:
        """Stop downloading ``urls`` (the crawl took their leases away): each one begun
        or waiting is reported as not finished, its partial file removed."""
        with self._lock:
            if not self._ended:
                self._incoming.put(frozenset(urls))
                self._wake()

    def add_cookies(self, lines: list[str]) -> None:
        """Add cookie lines to the jar, on the engine's thread, before it starts any task
        submitted after this call (both queues are read in that order)."""
        self._cookies.put(lines)
        self._wake()

    def close(self) -> None:
        """End :meth:`run`: what is in flight is handed back (reported as None)."""
        self._closing = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full socket buffer wakes it already
            self._wake_w.send(b"\0")

    # ----- the loop -------------------------------------------------------------------

    def run(self) -> None:
        """Download until closed or stopped. A bug here is raised after handing back."""
        next_sweep = 0.0
        try:
            while not (self._closing or self._stop.is_set()):
                self._take_incoming()
                self._take_verdicts()
                self._start_waiting()
                self._wait_and_act()
                self._collect_done()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_EVERY
                if self._rate:
                    self._callbacks.refill(now, self._active)
                self._send_outbox()
        finally:
            self._shut_down()

    def _wait_and_act(self) -> None:
        now = time.monotonic()
        wait = TICK
        if self._timer_due is not None:
            wait = max(0.0, min(wait, self._timer_due - now))
        if self._paused:
            wait = min(wait, RATE_BURST / 2)
        if self._waiting and len(self._active) < self._slots:
            wait = 0.0
        ready = self._selector.select(wait)
        heard_at = time.monotonic() if ready else now
        for key, mask in ready:
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
                continue
            if mask & selectors.EVENT_READ:
                self._heard[key.fd] = heard_at
            self._multi.socket_action(key.fd, curl_events(mask))
        if self._timer_due is not None and time.monotonic() >= self._timer_due:
            self._timer_due = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)

    def _on_timer(self, timeout_ms: int) -> None:
        self._timer_due = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def _send_outbox(self) -> None:
        if self._outbox:
            results, self._outbox = self._outbox, []
            self._report(results)

    def _take_incoming(self) -> None:
        # The tasks first, then the cookies: add_cookies() comes before the submit() of
        # the tasks that need them, so every task taken here has its cookies queued by
        # now. (Cookies first would miss those given while the tasks were being taken.)
        taken: list[Task] = []
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, frozenset):
                self._waiting.extend(taken)  # those given before it may be dropped too
                taken = []
                self._drop(item)
            else:
                taken.append(item)
        while not self._cookies.empty():
            add_to_jar(self._share, self._cookies.get_nowait())
        self._waiting.extend(taken)

    def _drop(self, urls: frozenset[str]) -> None:
        for slot in [s for s in self._active if s.transfer and s.transfer.task[0] in urls]:
            self._finish(slot, None)
        for slot in [s for s, t in self._parked.items() if t.task[0] in urls]:
            self._finish(slot, None, active=False)
        kept = [task for task in self._waiting if task[0] not in urls]
        for task in self._waiting:
            if task[0] in urls:
                self._outbox.append((task[0], None))
        self._waiting.clear()
        self._waiting.extend(kept)

    def _start_waiting(self) -> None:
        while self._waiting and len(self._active) < self._slots:
            task = self._waiting.popleft()
            slot = self._free.pop() if self._free else self._new_slot()
            slot.transfer = Transfer(task, task[0])
            self._guarded(slot, self._begin)

    # ----- handles ----------------------------------------------------------------------

    def _new_slot(self) -> Slot:
        handle = pycurl.Curl()
        slot = Slot(handle)
        self._by_handle[id(handle)] = slot
        set_common_options(handle, self._options, ca_file=self._ca_file, share=self._share)
        setopt = handle.setopt
        setopt(pycurl.HTTPHEADER, self._headers)
        setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(self._limits.connect_timeout * 1000)))
        setopt(pycurl.BUFFERSIZE, BUFFER_BYTES)
        callbacks = self._callbacks
        setopt(pycurl.WRITEFUNCTION, functools.partial(callbacks.on_body, slot))
        setopt(pycurl.HEADERFUNCTION, functools.partial(callbacks.on_header, slot))
        setopt(pycurl.OPENSOCKETFUNCTION, functools.partial(callbacks.on_open_socket, slot))
        setopt(pycurl.PREREQFUNCTION, functools.partial(callbacks.on_connected, slot))
        setopt(pycurl.SOCKOPTFUNCTION, functools.partial(callbacks.on_new_socket, slot))
        if not self._per_hop:  # the same proxy and no login for every hop: set once
            set_hop_options(handle, self._options, self._proxies, "http:")
        return slot

    def _begin(self, slot: Slot) -> None:
        """Send the current hop of the slot's transfer."""
        transfer = slot.transfer
        assert transfer is not None
        remaining = transfer.started + self._limits.deadline - time.monotonic()
        if remaining <= 0:
            self._finish(slot, failed(transfer, too_slow(self._limits),
                                      FailureKind.TOO_SLOW, True), active=False)
            return
        url = transfer.url
        handle = slot.handle
        handle.setopt(pycurl.URL, request_url(url))
        handle.setopt(pycurl.TIMEOUT_MS, max(1, int(remaining * 1000)))
        if transfer.fresh != slot.fresh:
            handle.setopt(pycurl.FRESH_CONNECT, 1 if transfer.fresh else 0)
            slot.fresh = transfer.fresh
        # Over https, rather share an HTTP/2 connection than open another. Only TLS
        # offers HTTP/2 here: over http, libcurl would wait for a busy HTTP/1.1
        # connection instead, and one trickling image held back every other of its host.
        pipewait = url.startswith("https:")
        if pipewait != slot.pipewait:
            handle.setopt(pycurl.PIPEWAIT, 1 if pipewait else 0)
            slot.pipewait = pipewait
        if self._elsewhere_headers is not None:
            elsewhere = other_origin(transfer.task[0], url)
            if elsewhere != slot.other_origin:
                handle.setopt(pycurl.HTTPHEADER,
                              self._elsewhere_headers if elsewhere else self._headers)
                slot.other_origin = elsewhere
        if self._per_hop:
            set_hop_options(handle, self._options, self._proxies, url)
        self._active.add(slot)
        self._multi.add_handle(handle)

    # ----- endings -------------------------------------------------------------------

    def _collect_done(self) -> None:
        while True:
            queued, succeeded, failed = self._multi.info_read()
            for handle in succeeded:
                slot = self._by_handle[id(handle)]
                self._guarded(slot, functools.partial(self._done, code=0, message=""))
            for handle, code, message in failed:
                slot = self._by_handle[id(handle)]
                self._guarded(slot, functools.partial(self._done, code=code, message=message))
            if not queued:
                return

    def _guarded(self, slot: Slot, action: Callable[[Slot], None]) -> None:
        """Run ``action``; a bug in it fails only the slot's image, not the engine."""
        try:
            action(slot)
        except Exception as exc:
            transfer = slot.transfer
            log.exception("unexpected error on %s", transfer.task[0] if transfer else "?")
            if transfer is None:
                return
            with contextlib.suppress(pycurl.error):
                self._multi.remove_handle(slot.handle)  # if it was added
            self._active.discard(slot)
            self._finish(slot, failed(transfer, f"worker error: "
                                      f"{exc.__class__.__name__}: {exc}",
                                      FailureKind.WORKER_ERROR, True), active=False)

    def _done(self, slot: Slot, code: int, message: str) -> None:
        """libcurl finished the slot's current hop: the Attempt, or the next hop."""
        transfer = slot.transfer
        assert transfer is not None
        self._multi.remove_handle(slot.handle)
        self._active.discard(slot)
        # libcurl answers info on the handle only now, out of its transfer.
        refused_by = (proxy_refusal(slot.handle, transfer.status, self._proxies, transfer.url)
                      if code or transfer.status == PROXY_AUTH_REQUIRED else "")
        if refused_by:  # the proxy's answer (to the request, or to its CONNECT)
            attempt = failed(transfer, refused_by, FailureKind.CONNECTION, True)
        elif transfer.answer is not None:
            attempt = transfer.answer
        elif transfer.unclean and not transfer.fresh:
            transfer.new_request()
            transfer.fresh = True
            self._begin(slot)  # the same hop again, on a new connection
            return
        elif transfer.location is not None and transfer.head_done:
            # Where to go is known from the head, however its body ended (cut
            # short by us when long, or broken): the next hop.
            self._follow(slot)
            return
        elif (code in _DIED_UNANSWERED and transfer.shared and not transfer.asked_again
              and transfer.status == 0 and transfer.blocked is None):
            # Not a byte of an answer, on a connection another request opened that died
            # meanwhile: an HTTP/2 server's GOAWAY and close left this stream unprocessed
            # (RFC 9113: safe to ask again), or a kept-alive connection was closed as it
            # was sent. Once more, on another connection, within the same deadline:
            # else an attempt was spent on a server that never saw the request.
            transfer.new_request()
            transfer.asked_again = True
            self._begin(slot)
            return
        elif code:
            attempt = self._transport_failure(transfer, code, message)
            if transfer.blocked is None and not transfer.out_of_files:
                attempt = attempt._replace(reason=self._at_the_proxy(
                    slot.handle, code, attempt.reason, transfer.url))
        elif transfer.sink is not None:
            attempt = self._stored(transfer)
        else:
            attempt = failed(transfer, "bad response: no answer", FailureKind.BAD_RESPONSE)
        self._finish(slot, attempt, active=False)

    def _at_the_proxy(self, handle: pycurl.Curl, code: int, reason: str, url: str) -> str:
        """``reason``, named as the pages' client names it when the failure was reaching
        the proxy: libcurl's "Failed to connect to 127.0.0.1 port P over proxy ..."
        read as the site's doing, at the proxy's port."""
        named = at_the_proxy(handle, code, reason, self._proxies, url)
        cause = failure_cause(handle, code)
        if named != reason and code == pycurl.E_COULDNT_CONNECT and cause:
            named = at_the_proxy(handle, code, f"{curl_failure(code, '')[1]}: {cause}",
                                 self._proxies, url)
        return named

    def _transport_failure(self, transfer: Transfer, code: int, message: str) -> Attempt:
        if transfer.blocked is not None and code in (pycurl.E_COULDNT_CONNECT,
                                                     pycurl.E_ABORTED_BY_CALLBACK):
            # At a redirect, said as the other refusals of one are: the image's own
            # host was fine, and the user looks for where it sent the request.
            at = redirected_to(transfer.url) if transfer.hops else ""
            return failed(transfer, at + str(transfer.blocked), FailureKind.BLOCKED)
        if transfer.out_of_files and code == pycurl.E_COULDNT_CONNECT:
            return failed(transfer, out_of_files_reason(), FailureKind.CONNECTION, True)
        if code == pycurl.E_OPERATION_TIMEDOUT and (
                time.monotonic() - transfer.started >= self._limits.deadline - 0.01):
            return failed(transfer, too_slow(self._limits), FailureKind.TOO_SLOW, True)
        kind, reason, transient = curl_failure(code, message)
        if code == pycurl.E_OPERATION_TIMEDOUT and transfer.last_io is None:
            # No connection carried the request (none ever did, or it was being asked
            # again, the one it went out on lost): over https, one waiting for the
            # HTTP/2 connection another request is making, whose handshake never ends,
            # is cut at the same connect timeout with libcurl's "Operation timed out".
            reason = "timed out connecting"
        return failed(transfer, reason, kind, transient)

    def _stored(self, transfer: Transfer) -> Attempt:
        sink = transfer.sink
        assert sink is not None
        transfer.sink = None
        try:
            if transfer.decoder is not None:
                transfer.decoder.finish()  # a compressed body must reach its end
            # libcurl fails a body shorter than its Content-Length or chunked framing,
            # but takes a closed connection, or an HTTP/2 stream reset "without error",
            # for the end of one that said no length: such a body must show its end.
            # A compressed stream's end does not vouch for it: each gzip member ends
            # one, and a connection closed between two cut the image in half.
            return sink.finish(transfer.content_type, length_known=(
                b"content-length" in transfer.headers
                or "chunked" in transfer.headers.get(b"transfer-encoding", "").lower()))
        except Abandoned as exc:
            return failed(transfer, str(exc), exc.kind, exc.transient)
        except StorageError as exc:
            return storage_failure(transfer.task[0], transfer.started, exc)
        finally:
            sink.discard()

    def _follow(self, slot: Slot) -> None:
        transfer = slot.transfer
        assert transfer is not None and transfer.location is not None
        location = transfer.location
        try:
            target = redirect_target(transfer.url, location)
        except ValueError:
            self._finish(slot, failed(transfer, f"bad redirect to {location[:200]!r}",
                                      FailureKind.REDIRECT), active=False)
            return
        transfer.hops += 1
        if transfer.hops > MAX_REDIRECTS:
            self._finish(slot, failed(transfer, TOO_MANY_REDIRECTS,
                                      FailureKind.REDIRECT), active=False)
            return
        if self._check_hop is None:
            self._next_hop(slot, target)
            return
        self._parked[slot] = transfer
        try:
            self._check_hop(target, functools.partial(self._verdict_came, slot, transfer,
                                                      target), transfer.task[0])
        except Exception as exc:  # a bug in the check fails this image, not the loop
            log.exception("unexpected error checking the redirect to %s", target)
            self._finish(slot, failed(transfer, f"worker error: {exc.__class__.__name__}:"
                                      f" {exc}", FailureKind.WORKER_ERROR, True),
                         active=False)

    def _verdict_came(self, slot: Slot, transfer: Transfer, target: str,
                      refusal: HopRefusal | None) -> None:
        """check_hop's verdict, from any thread: the loop acts on it (_take_verdicts)."""
        self._verdicts.put((slot, transfer, target, refusal))
        self._wake()

    def _take_verdicts(self) -> None:
        while True:
            try:
                slot, transfer, target, refusal = self._verdicts.get_nowait()
            except queue.Empty:
                return
            if self._parked.get(slot) is not transfer:
                continue  # cut by its deadline, or handed back, while it waited
            del self._parked[slot]
            if refusal is None:
                self._guarded(slot, functools.partial(self._next_hop, target=target))
                continue
            self._finish(slot, failed(transfer,
                                      redirected_to(target) + refusal.reason,
                                      FailureKind.REDIRECT, refusal.passing), active=False)

    def _next_hop(self, slot: Slot, target: str) -> None:
        transfer = slot.transfer
        assert transfer is not None
        transfer.url = target
        transfer.new_request()
        transfer.fresh = transfer.asked_again = False
        self._begin(slot)

    def _sweep(self, now: float) -> None:
        """Cut what is past its deadline or silent past the read timeout."""
        limits = self._limits
        for slot, parked in list(self._parked.items()):  # waiting for a verdict
            if now - parked.started >= limits.deadline:
                self._finish(slot, failed(parked, too_slow(limits),
                                          FailureKind.TOO_SLOW, True), active=False)
        for slot in [s for s in self._active if s.transfer is not None]:
            transfer = slot.transfer
            assert transfer is not None
            if now - transfer.started > limits.deadline + DEADLINE_SLACK:
                self._finish(slot, failed(transfer, too_slow(limits),
                                          FailureKind.TOO_SLOW, True))
            elif (transfer.last_io is not None and slot not in self._paused
                  and now - transfer.last_io > limits.read_timeout
                  and not self._still_heard(slot, transfer, now)):
                if transfer.location is not None and transfer.head_done:
                    self._multi.remove_handle(slot.handle)  # a redirect whose body stalls
                    self._active.discard(slot)
                    self._follow(slot)
                    continue
                self._finish(slot, transfer.answer or failed(
                    transfer, "timed out", FailureKind.TIMEOUT, True))

    def _still_heard(self, slot: Slot, transfer: Transfer, now: float) -> bool:
        """Whether bytes came on the transfer's connection within the read timeout (the
        rare path: asked only of a transfer whose callbacks were silent that long)."""
        with contextlib.suppress(pycurl.error):
            fd = slot.handle.getinfo(pycurl.ACTIVESOCKET)
            if fd == -1:
                # No connection carries it: the one it went out on was lost, and libcurl
                # asks it again itself, waiting for the new connection another request
                # is making (one it opens itself, _on_new_socket sees). Connecting: the
                # connect timeout applies, the read timeout once a connection carries it.
                transfer.last_io = None
                return True
            heard = self._heard.get(fd)
            # Later than its own last sign of life: not an earlier socket of that number.
            if heard is None or transfer.last_io is None or heard <= transfer.last_io:
                return False
            # Its own bytes only on an HTTP/1 connection: over HTTP/2 a head does not
            # trickle unseen, a stream shows its bytes as they come, and the socket's
            # bytes may be the connection's own frames (a server's PINGs, SETTINGS) or
            # another stream's. Over TLS, one is known HTTP/1 once an HTTP/1 answer came
            # on it: before then (no status line whole yet on a new connection) it may
            # be HTTP/2, and a stream the server never answers but PINGs was kept alive
            # till its deadline. (libcurl tells what ALPN chose only in its VERBOSE
            # text, at about three times the CPU per image.)
            if (transfer.connection is None
                    or not self._kept.speaks_http1(transfer.connection, transfer.url)):
                return False
            # Nor while another transfer's request is on that socket.
            if any(other is not slot and other.transfer is not None
                   and other.handle.getinfo(pycurl.ACTIVESOCKET) == fd
                   for other in self._active):
                return False
            transfer.last_io = heard
            return now - heard <= self._limits.read_timeout
        return False

    def _finish(self, slot: Slot, attempt: Attempt | None, *, active: bool = True) -> None:
        """Report the slot's transfer and free the slot (``active``: still in libcurl)."""
        transfer = slot.transfer
        assert transfer is not None
        if active:
            self._multi.remove_handle(slot.handle)
            self._active.discard(slot)
        self._paused.discard(slot)
        self._parked.pop(slot, None)
        if transfer.sink is not None:
            transfer.sink.discard()
            transfer.sink = None
        slot.transfer = None
        self._free.append(slot)
        self._outbox.append((transfer.task[0], attempt))

    def _shut_down(self) -> None:
        """Hand back everything not finished (reported as None), and free libcurl."""
        with self._lock:
            self._ended = True  # from now on submit() reports its tasks itself
        for slot in list(self._active):
            self._finish(slot, None)
        for slot in list(self._parked):
            self._finish(slot, None, active=False)
        self._take_incoming()
        for task in self._waiting:
            self._outbox.append((task[0], None))
        self._waiting.clear()
        self._send_outbox()
        for slot in self._free:
            slot.handle.close()
        self._free.clear()
        self._multi.close()
        self._share.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


# How a connection that died under a request ends it (a reset, a close, an HTTP/2
# connection error or a GOAWAY's stream reset): not a timeout, nor a TLS verdict.
_DIED_UNANSWERED = frozenset({pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR, pycurl.E_GOT_NOTHING,
                              pycurl.E_HTTP2, CURLE_HTTP2_STREAM})

