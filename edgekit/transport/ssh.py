"""The SSH transport (paramiko): a device reached by the name the user already uses with `ssh`.

Secure by default: a host key must already be in `~/.ssh/known_hosts` or edgekit's own
`~/.config/edgekit/known_hosts`; an unknown key is refused (`edgekit targets trust NAME` adds it
after showing the fingerprint) and a changed key is refused as a possible interception. Keys come
from ssh-agent and key files only; edgekit never asks for or stores a password.

Every command line is built from an argv list with `shlex.quote`, so no argument can reach the
remote shell as syntax. Only connecting is retried (with backoff, on transient network failures);
authentication and host-key failures never are.
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import os
import posixpath
import select
import shlex
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import paramiko

from ..errors import ConnectionLost, DeviceError, SpecError, TransportError
from . import Completed, Progress

DEFAULT_PORT = 22
KEEPALIVE_S = 15
RETRIES = 3          # connection attempts on transient failures
MAX_HOPS = 8         # a ProxyJump chain longer than this is a loop in the config, not a network
BACKOFF_S = 0.5      # first pause between attempts; doubles each time


def user_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def edgekit_known_hosts() -> Path:
    """Where `edgekit targets trust` records keys (never ~/.ssh, which belongs to the user)."""
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgekit" / "known_hosts"


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint exactly as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class Endpoint:
    """Where and as whom to connect, after ~/.ssh/config has been applied."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: list[str] = field(default_factory=list)
    identities_only: bool = False
    proxy_jump: str | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use: `host`, or `[host]:port` off port 22."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Hop:
    """One host of a ProxyJump chain, as written: `[user@]host[:port]` or `ssh://[user@]host[:port]`."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_proxy_jump(value: str, where: str) -> list[Hop]:
    """The hops of a ProxyJump value in the order ssh takes them (ssh_config(5): a comma-separated
    list, each `[user@]host[:port]` or an ssh:// URI). A malformed value is the user's to fix: a
    SpecError naming the key, the value and `where` it was written."""
    hops = []
    for raw in value.split(","):
        text = raw.strip()
        if text.startswith("ssh://"):
            text = text[len("ssh://"):].rstrip("/")
        user, _, rest = text.rpartition("@")
        port_text = None
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            if tail:
                port_text = tail[1:] if tail.startswith(":") else tail
        elif rest.count(":") == 1:
            host, port_text = rest.split(":")
        else:
            host = rest
        problem = None
        if not host:
            problem = f"hop {raw.strip()!r} names no host"
        elif any(c.isspace() or c in "/@[]" for c in host) or any(c.isspace() for c in user):
            problem = f"hop {raw.strip()!r} is not [user@]host[:port]"
        elif port_text is not None and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            problem = f"hop {raw.strip()!r} has port {port_text!r}, not a number from 1 to 65535"
        if problem:
            raise SpecError(f"{where}: ProxyJump {value!r}: {problem}. Fix: write ProxyJump [user@]host[:port] "
                            f"(several hops separated by commas), or none")
        hops.append(Hop(host, user or None, int(port_text) if port_text else None))
    return hops


def resolve(host: str, user: str | None = None, port: int | None = None, proxy_jump: str | None = None
            ) -> Endpoint:
    """Apply ~/.ssh/config to `host` (an address or an alias). Explicit user/port win, as with ssh -l/-p;
    an explicit `proxy_jump` (the rest of a chain this host is a hop of) wins over the host's own."""
    config = paramiko.SSHConfig()
    path = Path.home() / ".ssh" / "config"
    if path.is_file():
        try:
            config = paramiko.SSHConfig.from_path(str(path))
        except Exception as exc:  # paramiko raises several types for a malformed file
            raise TransportError(f"cannot read {path}: {exc}. Fix: correct that line of your ssh config") from None
    entry = config.lookup(host)
    try:
        port = port or int(entry.get("port", DEFAULT_PORT))
        if not 0 < port < 65536:
            raise ValueError(port)
    except ValueError:
        raise SpecError(f"{path}: Port {entry.get('port')!r} for {host} is not a port number (1 to 65535). "
                        f"Fix: correct it in your ssh config") from None
    jump = proxy_jump if proxy_jump is not None else entry.get("proxyjump")
    if jump and jump.lower() != "none":
        parse_proxy_jump(jump, f"{path} (Host {host})")  # a malformed value stops here, before any connection
    return Endpoint(
        alias=host,
        hostname=entry.get("hostname", host),
        port=port,
        user=user or entry.get("user") or getpass.getuser(),
        identity_files=[os.path.expanduser(p) for p in entry.get("identityfile", [])],
        identities_only=str(entry.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
    )


def load_known_hosts() -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for path in (user_known_hosts(), edgekit_known_hosts()):
        if path.is_file():
            try:
                keys.load(str(path))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise TransportError(f"cannot read {path}: {exc}. Fix: repair or remove the malformed line") from None
    return keys


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko's signature
        raise UnknownHostKey(key)


class _Transient(Exception):
    """A failure worth another connection attempt; carries the message for the last one."""


class SSHTransport:
    """Implements edgekit.transport.Transport over one SSH connection (exec + sftp)."""

    name = "ssh"

    def __init__(self, target_name: str, host: str, user: str | None = None, port: int | None = None,
                 connect_timeout: float = 10.0, retries: int = RETRIES, keepalive: int = KEEPALIVE_S,
                 proxy_jump: str | None = None) -> None:
        self.target = target_name
        self.endpoint = resolve(host, user, port, proxy_jump)
        self.connect_timeout = connect_timeout
        self.retries = max(1, retries)
        self.keepalive = keepalive
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._jump: SSHTransport | None = None
        # Set while a device lock is held over this connection (Device.locked): a connection that
        # drops then is not silently made again, since the lock did not survive it.
        self.pinned = False
        self._lost_reason: str | None = None

    # ------------------------------------------------------------------ connecting

    def open(self) -> SSHTransport:
        """Connect now (otherwise the first operation does); retried only on transient failures."""
        self._connection()
        return self

    def _connection(self) -> paramiko.Transport:
        if self._client is not None:
            live = self._client.get_transport()
            if live is not None and live.is_active():
                return live
            self._drop()
            self._lost_reason = self._lost_reason or "the connection closed"
        if self.pinned and self._lost_reason:
            raise self._lock_lost()
        delay, last = BACKOFF_S, ""
        for attempt in range(self.retries):
            try:
                self._client = self._connect_once()
                self._lost_reason = None
                live = self._client.get_transport()
                live.set_keepalive(self.keepalive)
                return live
            except _Transient as exc:
                last = str(exc)
                if attempt + 1 < self.retries:
                    time.sleep(delay)
                    delay *= 2
        raise TransportError(f"target {self.target}: {last} (tried {self.retries} times). Fix: check the device "
                             f"is powered and on the network, and its address in the target file or ~/.ssh/config")

    def _socket(self) -> socket.socket | paramiko.Channel:
        ep = self.endpoint
        if ep.proxy_jump:
            if self._jump is None:
                self._jump = self._last_hop(ep.proxy_jump)
            try:
                return self._jump._connection().open_channel("direct-tcpip", (ep.hostname, ep.port), ("127.0.0.1", 0),
                                                             timeout=self.connect_timeout)
            except paramiko.ChannelException as exc:
                raise _Transient(f"jump host {self._jump.endpoint.alias} cannot reach {ep.hostname}:{ep.port} "
                                 f"({exc})") from None
        try:
            return socket.create_connection((ep.hostname, ep.port), timeout=self.connect_timeout)
        except ConnectionRefusedError:
            raise TransportError(f"target {self.target}: {ep.hostname} refused the connection on port {ep.port}: no "
                                 f"SSH server listens there. Fix: check port in {self._where()} (Termux's sshd uses "
                                 f"8022) and that sshd runs on the device") from None
        except socket.gaierror as exc:
            raise TransportError(f"target {self.target}: host name {ep.hostname!r} does not resolve ({exc.strerror}). "
                                 f"Fix: correct host in {self._where()}") from None
        except (socket.timeout, TimeoutError):
            raise _Transient(f"cannot reach {ep.hostname}:{ep.port}: no answer within {self.connect_timeout:g}s") from None
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ECONNRESET):
                raise _Transient(f"cannot reach {ep.hostname}:{ep.port}: {exc.strerror}") from None
            raise TransportError(f"target {self.target}: cannot connect to {ep.hostname}:{ep.port}: {exc.strerror}. "
                                 f"Fix: check host and port in {self._where()}") from None

    def _last_hop(self, chain: str) -> SSHTransport:
        """The transport to the chain's last host, itself reached through the hosts before it: for
        `ProxyJump a,b`, b through a, as ssh does. Each hop's own ~/.ssh/config entry applies
        (HostName, User, Port, IdentityFile), and every hop's host key is verified like a target's."""
        hops = parse_proxy_jump(chain, f"~/.ssh/config (Host {self.endpoint.alias})")
        depth = self.target.count(" (jump host ")
        if depth + len(hops) > MAX_HOPS:
            raise SpecError(f"target {self.target}: ProxyJump leads through more than {MAX_HOPS} hosts: a loop in "
                            f"~/.ssh/config? Fix: check the ProxyJump lines of the hosts it names")
        last, before = hops[-1], hops[:-1]
        return SSHTransport(f"{self.target} (jump host {last})", last.host, last.user, last.port,
                            self.connect_timeout, self.retries, self.keepalive,
                            proxy_jump=",".join(str(h) for h in before) if before else None)

    def _where(self) -> str:
        return "the target file or ~/.ssh/config"

    def _connect_once(self) -> paramiko.SSHClient:
        ep = self.endpoint
        sock = self._socket()
        client = paramiko.SSHClient()
        for path in (user_known_hosts(), edgekit_known_hosts()):
            if path.is_file():
                try:
                    client.load_system_host_keys(str(path))  # "system": read, never written back
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    sock.close()
                    raise TransportError(f"cannot read {path}: {exc}. Fix: repair or remove the malformed line") from None
        client.set_missing_host_key_policy(_RefuseUnknown())
        keys = [f for f in ep.identity_files if os.path.isfile(f)]
        try:
            client.connect(ep.hostname, port=ep.port, username=ep.user, sock=sock, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                           key_filename=keys or None, allow_agent=not (ep.identities_only and keys),
                           look_for_keys=not (ep.identities_only and keys), password=None, passphrase=None)
            return client
        except UnknownHostKey as exc:
            client.close()
            raise TransportError(
                f"target {self.target}: the host key of {ep.known_hosts_name} is not known "
                f"({exc.key.get_name()} {fingerprint(exc.key)}); refusing to connect. Fix: check the fingerprint on "
                f"the device (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run: edgekit targets trust "
                f"{self.target}") from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportError(
                f"target {self.target}: the host key of {ep.known_hosts_name} CHANGED (now {fingerprint(exc.key)}, "
                f"known as {fingerprint(exc.expected_key)}): possible interception (man-in-the-middle), refusing "
                f"to connect. Fix: if the device was re-installed, remove the old key with ssh-keygen -R "
                f"'{ep.known_hosts_name}' -f {self._key_file(ep.known_hosts_name)}, then run: edgekit targets trust "
                f"{self.target}") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(
                f"target {self.target}: authentication failed as {ep.user}@{ep.hostname} with the keys from "
                f"ssh-agent and {', '.join(keys) or '~/.ssh/id_*'}. Fix: install your public key on the device "
                f"(ssh-copy-id -p {ep.port} {ep.user}@{ep.hostname}) or set User/IdentityFile for "
                f"{ep.alias} in ~/.ssh/config; edgekit never uses passwords") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            text = str(exc) or type(exc).__name__
            if "No authentication methods available" in text:
                raise TransportError(
                    f"target {self.target}: no SSH key to log in as {ep.user}@{ep.hostname} (no ssh-agent and no "
                    f"key file). Fix: create a key (ssh-keygen) and install it with ssh-copy-id; edgekit never "
                    f"uses passwords") from None
            raise _Transient(f"SSH handshake with {ep.hostname}:{ep.port} failed: {text}") from None

    @staticmethod
    def _key_file(name: str) -> str:
        for path in (user_known_hosts(), edgekit_known_hosts()):
            if path.is_file() and paramiko.HostKeys(str(path)).lookup(name):
                return str(path)
        return str(user_known_hosts())

    def _drop(self) -> None:
        for thing in (self._sftp, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass
        self._sftp = self._client = None

    def close(self) -> None:
        self._drop()
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def host_key(self) -> paramiko.PKey:
        """The key the server presents, fetched without trusting it (for `edgekit targets trust`)."""
        ep = self.endpoint
        for attempt in range(self.retries):
            sock = self._socket()
            transport = paramiko.Transport(sock)
            try:
                transport.banner_timeout = self.connect_timeout
                transport.start_client(timeout=self.connect_timeout)
                return transport.get_remote_server_key()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt + 1 == self.retries:
                    raise TransportError(f"target {self.target}: SSH handshake with {ep.hostname}:{ep.port} failed: "
                                         f"{exc}. Fix: check the device runs sshd on that port") from None
                time.sleep(BACKOFF_S * 2 ** attempt)
            finally:
                transport.close()
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ commands

    def _lost(self, doing: str, exc: BaseException) -> TransportError:
        self._drop()
        self._lost_reason = (f"the connection to {self.endpoint.hostname} was lost while {doing} "
                             f"({exc or type(exc).__name__})")
        if self.pinned:
            return self._lock_lost()
        return TransportError(f"target {self.target}: {self._lost_reason}. Fix: check the device and network, then "
                              f"run again: completed steps are kept")

    def _lock_lost(self) -> ConnectionLost:
        return ConnectionLost(f"target {self.target}: {self._lost_reason}; the device lock went with it, so nothing "
                              f"more was done on the device. Fix: check the device and the network, then run again: "
                              f"measurements already taken are kept")

    def _channel(self, argv: Sequence[str]) -> tuple[paramiko.Channel, str]:
        command = " ".join(shlex.quote(str(a)) for a in argv)
        try:
            channel = self._connection().open_session(timeout=self.connect_timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"starting {argv[0]}", exc) from None
        return channel, command

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        channel, _ = self._channel(argv)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            channel.shutdown_write()  # no stdin: like </dev/null
            while True:
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    _close_quietly(channel)
                    raise DeviceError(f"target {self.target}: {argv[0]} did not finish in {timeout:.0f}s; "
                                      f"raise the profile's [bench] max_s or check what is hogging the device",
                                      kind="timeout")
                select.select([channel], [], [], min(left, 1.0))
            status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"running {argv[0]}", exc) from None
        finally:
            _close_quietly(channel)
        if status == -1:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                raise self._lost(f"running {argv[0]}", ConnectionError("connection closed"))
            # The command ended without an exit status: it was killed by a signal.
            err += b"\n(killed by a signal on the device)"
        return Completed(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def spawn(self, argv: Sequence[str]) -> SSHSession:
        """Start a long-lived command whose stdin is kept open (the device lock holder)."""
        channel, _ = self._channel(argv)
        return SSHSession(channel, self)

    # ------------------------------------------------------------------ files

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is not None:
            live = self._client.get_transport() if self._client else None
            if live is not None and live.is_active():
                return self._sftp
            self._sftp = None
        try:
            self._sftp = paramiko.SFTPClient.from_transport(self._connection())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost("opening sftp", exc) from None
        return self._sftp

    @staticmethod
    def _rel(remote: str) -> str:
        if remote == "~":
            return "."
        return remote[2:] if remote.startswith("~/") else remote

    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        if path in ("", ".", "/"):
            return
        try:
            sftp.stat(path)
            return
        except FileNotFoundError:
            pass
        self._makedirs(sftp, posixpath.dirname(path))
        try:
            sftp.mkdir(path, mode=0o700)
        except OSError as exc:
            try:
                sftp.stat(path)  # made meanwhile by someone else: fine
            except OSError:
                raise exc from None

    def _write_error(self, path: str, exc: BaseException) -> TransportError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if "size mismatch" in reason:  # sftp-server dropped writes: in practice a full disk
            reason = f"the device stored fewer bytes than were sent ({reason.split('!')[-1].strip()}): no space left?"
        return TransportError(f"target {self.target}: cannot write {path} on the device: {reason}. Fix: free space "
                              f"on the device or set the target's workdir to a writable folder")

    def put(self, local: str, remote: str, progress: Progress | None = None) -> None:
        """Upload to `.<name>.part`, then rename: a reader never sees a partial file.

        A `.part` an earlier upload left (a lost link, an interrupt) is continued from its size
        rather than sent again from byte 0; the file is used only once its sha256 is checked on
        the device (the agent's `accept`), so a wrong resumed part is refused, not run. An upload
        with no progress for `stall_seconds()` closes the connection and fails saying how far it
        got, instead of waiting for TCP to give up (a quarter of an hour).
        """
        path = self._rel(remote)
        parent, name = posixpath.split(path)
        sftp = self._sftp_client()
        tmp = posixpath.join(parent, f".{name}.part")
        total = os.path.getsize(local)
        watchdog = _Stall(self, stall_seconds())
        try:
            self._makedirs(sftp, parent)
            offset = self._resumable(sftp, tmp, total)
            with open(local, "rb") as src:
                dst = sftp.open(tmp, "ab" if offset else "wb")  # not `with`: see KeyboardInterrupt below
                try:
                    sftp.chmod(tmp, 0o600)  # before any data: sftp-server creates files with its umask
                    src.seek(offset)
                    watchdog.start(offset)
                    window = InFlight(watchdog.stall_s)
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        # Pipelined writes, except every `window.size` bytes one that waits until the
                        # device has acknowledged all before it: progress then means bytes on the
                        # device, within about a second, not bytes sitting in buffers.
                        barrier = window.unconfirmed + len(chunk) >= window.size
                        dst.set_pipelined(not barrier)
                        dst.write(chunk)
                        window.sent(len(chunk), confirmed=barrier)
                        watchdog.sent += len(chunk)
                        if progress is not None:
                            progress(watchdog.sent, total)
                except Exception:
                    _close_file_quietly(dst)
                    raise
                dst.close()  # waits until the device has acknowledged every write
            if sftp.stat(tmp).st_size != total:
                raise OSError(errno.EIO, f"size mismatch: {sftp.stat(tmp).st_size} of {total} bytes stored")
            sftp.posix_rename(tmp, path)
        except (KeyboardInterrupt, SystemExit):
            # Closing the remote file would wait on the link for everything still in flight.
            self._abandon(f"the run was interrupted while uploading {name}")
            raise
        except (paramiko.SSHException, EOFError, ConnectionError, socket.error) as exc:
            if watchdog.stalled:
                raise self._lost(f"uploading {name}: no progress for {watchdog.stall_s:g}s after "
                                 f"{watchdog.sent} of {total} bytes", exc) from None
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError) and self._alive():
                self._remove_quietly(sftp, tmp)
                raise self._write_error(path, exc) from None
            raise self._lost(f"uploading {name} ({watchdog.sent} of {total} bytes sent)", exc) from None
        finally:
            watchdog.stop()

    def _resumable(self, sftp: paramiko.SFTPClient, part: str, total: int) -> int:
        """How many bytes of an earlier, cut-off upload to keep: a plain file no longer than this
        one; anything else under that name (a link, a longer file) is removed first."""
        try:
            st = sftp.lstat(part)
        except FileNotFoundError:
            return 0
        if stat.S_ISREG(st.st_mode or 0) and 0 < (st.st_size or 0) <= total:
            return int(st.st_size)
        self._remove_quietly(sftp, part)
        return 0

    def _abandon(self, why: str) -> None:
        """Drop the connection now, discarding what the kernel still holds to send (a reset, not a
        close that drains a slow link for minutes): an interrupt stops the upload where it is, the
        device keeps a `.part` the next run continues, and a connection holding the lock is not
        made again."""
        transport = self._client.get_transport() if self._client else None
        sock = getattr(transport, "sock", None)
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass
        self._drop()
        self._lost_reason = why

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    @staticmethod
    def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except Exception:
            pass

    def get(self, remote: str, local: str) -> None:
        sftp = self._sftp_client()
        tmp = f"{local}.part"
        try:
            sftp.get(self._rel(remote), tmp)
            os.replace(tmp, local)
        except FileNotFoundError:
            raise TransportError(f"target {self.target}: {remote} does not exist on the device") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if self._alive():
                raise TransportError(f"target {self.target}: cannot read {remote}: {exc}") from None
            raise self._lost(f"downloading {remote}", exc) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def exists(self, remote: str) -> bool:
        sftp = self._sftp_client()
        try:
            sftp.stat(self._rel(remote))
            return True
        except FileNotFoundError:
            return False
        except PermissionError:
            raise TransportError(f"target {self.target}: cannot look at {remote}: permission denied. Fix: set the "
                                 f"target's workdir to a folder the login user owns") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(f"looking for {remote}", exc) from None


class SSHSession:
    """A running remote command: read its stdout line by line, write its stdin, close stdin to end it."""

    STDERR_KEEP = 1 << 16

    def __init__(self, channel: paramiko.Channel, owner: SSHTransport) -> None:
        self.channel = channel
        self.owner = owner
        self._buffer = bytearray()
        self._err = bytearray()

    def _drain_stderr(self) -> None:
        """Read stderr as it comes (the last 64 kB are kept): unread, it would fill the SSH window
        and stall the command."""
        while self.channel.recv_stderr_ready():
            self._err += self.channel.recv_stderr(1 << 16)
        del self._err[:-self.STDERR_KEEP]

    def readline(self, timeout: float, max_bytes: int = 1 << 20) -> str:
        """One line of stdout ('' at end of output or on timeout; cut at max_bytes)."""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in self._buffer and len(self._buffer) < max_bytes:
                self._drain_stderr()
                if self.channel.recv_ready():
                    chunk = self.channel.recv(1 << 16)
                    if not chunk:
                        break
                    self._buffer += chunk
                    continue
                if self.channel.exit_status_ready() or self.channel.closed:
                    if not self.channel.recv_ready():
                        break
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([self.channel], [], [], min(left, 1.0))
        except (paramiko.SSHException, EOFError, OSError):
            pass  # a lost connection reads as the end of output
        end = self._buffer.find(b"\n", 0, max_bytes)
        if end >= 0:
            line, self._buffer = bytes(self._buffer[:end]), self._buffer[end + 1:]
            return line.decode("utf-8", "replace") + "\n"
        line, self._buffer = bytes(self._buffer[:max_bytes]), self._buffer[max_bytes:]
        return line.decode("utf-8", "replace")

    def write(self, text: str) -> None:
        try:
            self.channel.sendall(text.encode())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self.owner._lost("talking to the agent session", exc) from None

    def stderr(self) -> str:
        try:
            self._drain_stderr()
        except (paramiko.SSHException, EOFError, OSError):
            pass
        return self._err.decode("utf-8", "replace")

    def close(self, timeout: float = 10.0) -> None:
        """End stdin (the command sees EOF and exits), wait for it, then close the channel."""
        try:
            self.channel.shutdown_write()
            deadline = time.monotonic() + timeout
            while not self.channel.exit_status_ready() and time.monotonic() < deadline:
                select.select([self.channel], [], [], 0.2)
                while self.channel.recv_ready():
                    self.channel.recv(1 << 16)
                self._drain_stderr()
        except (paramiko.SSHException, EOFError, OSError):
            pass
        finally:
            _close_quietly(self.channel)


CHUNK = 1 << 15  # one SFTP write request (paramiko's MAX_REQUEST_SIZE)


class InFlight:
    """How many bytes an upload may have sent but not yet seen acknowledged.

    Bytes handed to paramiko sit in its 2 MB channel window and the kernel's socket buffer: on a
    256 kbit/s link that is over a minute of data, so counting them as sent makes the progress
    bar lie and makes closing the file look like a stall. The window is sized from the rate
    measured at each acknowledged write, so that waiting for an acknowledgement takes about
    `stall_s / 4` (at most 1 s): the watchdog never sees a healthy slow link as dead, and a fast
    one still streams (one round trip lost per window).
    """

    MIN, MAX = CHUNK, 16 << 20

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.target_s = min(stall_s / 4, 1.0)
        self.size = self.MIN
        self.unconfirmed = 0  # bytes written since the last acknowledged write
        self._clock = clock
        self._since = clock()

    def sent(self, n: int, confirmed: bool) -> None:
        if not confirmed:
            self.unconfirmed += n
            return
        now = self._clock()
        rate = (self.unconfirmed + n) / max(now - self._since, 1e-6)
        self.size = int(min(max(rate * self.target_s, self.MIN), self.size * 4, self.MAX))
        self.unconfirmed, self._since = 0, now


def stall_seconds() -> float:
    """How long an upload may make no progress before it is given up (EDGEKIT_STALL_S, default 60)."""
    try:
        value = float(os.environ.get("EDGEKIT_STALL_S", "60"))
    except ValueError:
        value = 60.0
    return value if value > 0 else 60.0


class _Stall:
    """Watches an upload's byte count; when it has not moved for `stall_s`, closes the connection,
    which is what makes a write blocked on a dead link return."""

    def __init__(self, owner: SSHTransport, stall_s: float) -> None:
        self.owner, self.stall_s = owner, stall_s
        self.sent = 0
        self.stalled = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sent: int) -> None:
        self.sent = sent
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        seen, since = self.sent, time.monotonic()
        while not self._stop.wait(min(0.5, self.stall_s / 4)):
            if self.sent != seen:
                seen, since = self.sent, time.monotonic()
            elif time.monotonic() - since > self.stall_s:
                self.stalled = True
                client = self.owner._client
                if client is not None:
                    client.close()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


def _close_file_quietly(handle: paramiko.SFTPFile) -> None:
    """A failed upload's remote file is closed (its handle freed on the device); the error that
    made it fail is the one reported, not this close's."""
    try:
        handle.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def _close_quietly(channel: paramiko.Channel) -> None:
    """Closing a channel sends a message; on a dead connection that fails, and that is fine."""
    try:
        channel.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass


def record_host_key(host: str, key_type: str, key_base64: str) -> Path:
    """Append a key the user confirmed to edgekit's own known_hosts (folder 0700, file 0600)."""
    path = edgekit_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a") as fh:
        fh.write(f"{host} {key_type} {key_base64}\n")
    os.chmod(path, 0o600)
    return path
