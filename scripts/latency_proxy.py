"""A TCP proxy on loopback that delays every chunk by a fixed time each way, so a round trip
through it costs `rtt_s` more: a slow link for SSH tests where netem (tc qdisc) is not available.

Bandwidth is not limited; data is pipelined (a chunk waits its delay, not the previous chunk's
delivery), as on a real long link. It counts the bytes each way, stops on `stop()` and at the
latest at its deadline, and never accepts from anything but loopback.
"""

from __future__ import annotations

import queue
import socket
import threading
import time


class DelayingProxy:
    def __init__(self, upstream: tuple[str, int], rtt_s: float, max_life_s: float = 1800.0) -> None:
        self.upstream = upstream
        self.one_way = rtt_s / 2
        self.deadline = time.monotonic() + max_life_s
        self.sent = 0       # host -> device, through the proxy
        self.received = 0   # device -> host
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DelayingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in [self.listener, *self._sockets]:
            try:
                s.close()
            except OSError:
                pass

    def _done(self) -> bool:
        return self._stop.is_set() or time.monotonic() > self.deadline

    def _accept(self) -> None:
        while not self._done():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                pending: queue.Queue = queue.Queue()
                threading.Thread(target=self._read, args=(src, pending, up), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, pending), daemon=True).start()

    def _read(self, src: socket.socket, pending: queue.Queue, up: bool) -> None:
        src.settimeout(0.5)
        while not self._done():
            try:
                data = src.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            with self._lock:
                if up:
                    self.sent += len(data)
                else:
                    self.received += len(data)
            pending.put((time.monotonic() + self.one_way, data))
            if not data:
                return
        pending.put((0.0, b""))

    def _write(self, dst: socket.socket, pending: queue.Queue) -> None:
        while True:
            due, data = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data or self._done():
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return
