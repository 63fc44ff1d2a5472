"""Test hosts: a Celery worker "on another machine", made on this one for a test.

Each ``WorkerHost`` is a Linux network namespace of its own (``ip netns add``) with a
veth pair to the root namespace: the host's side is 10.231.S.2/24, the root side
10.231.S.1. The worker runs in it under ``unshare --uts`` with a hostname of its own, so
it has its own address, its own network stack and its own name, and nothing of the
root namespace's loopback: it reaches PostgreSQL and Redis only across the veth.

PostgreSQL and Redis listen on 127.0.0.1, which no other namespace can reach, and a
test must not reconfigure them; so a small TCP forwarder in the test process listens
on 10.231.S.1 (the "database host" as this host sees it) and forwards to 127.0.0.1.

What is not separate: the worker reaches the one Docker engine of the machine through
the Unix socket /var/run/docker.sock (the filesystem, not the network), so both "hosts"
drive the same engine. Two engines would be closer to a real deployment, but each
would need the NPU image loaded and the NPU egress policy applied; the worker code
does not tell one engine from another except in one place, and that is said where it
matters (a survivor can reap a lost worker's NPUs because they share the engine).

The NPU egress policy (deploy/bootstrap/lib.sh ensure_npu_egress_policy) is not
touched: its chains match only traffic that enters from the NPU bridge, and they
already refuse NPU traffic to 10.0.0.0/8 and to any address of this host, the
forwarders' included. The veth's traffic to the forwarders is let in by a rule of the
host's own at the top of INPUT (``-i fkhS -d 10.231.S.1 -p tcp --dport PORT``, marked
with a comment naming the host), so that a firewall whose INPUT policy is DROP does
not cut the host off; the rule goes with the host.

Subnet S is claimed with an exclusive lock on a file under LOCK_DIR, held for as long
as the host exists; the kernel drops it when the test process dies. Every claim first
removes whatever a dead owner left under that subnet's names (its namespace, the
processes still in it, its veth), so leftovers of a crashed run are cleaned at the
next start, and a live run's hosts (locked) are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

NAMESPACE_PREFIX = "flowkit-host-"
VETH_PREFIX = "fkh"  # + S; interface names have at most 15 characters
SUBNET_PREFIX = "10.231"
LOCK_DIR = Path("/run/flowkit-test-hosts")
SUBNETS = range(1, 255)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespace_of(subnet: int) -> str:
    return f"{NAMESPACE_PREFIX}{subnet}"


def veth_of(subnet: int) -> str:
    return f"{VETH_PREFIX}{subnet}"


def _iptables(*args: str) -> subprocess.CompletedProcess[str] | None:
    if shutil.which("iptables") is None:
        return None
    # -w: wait for the xtables lock, which the Docker engine takes whenever a container
    # starts; without it a rule can fail to go in, or to go away.
    return subprocess.run(["iptables", "-w", "30", *args], capture_output=True, text=True)


def input_rules_of(subnet: int) -> list[list[str]]:
    """The INPUT rules that let ``subnet``'s host reach its forwarders."""
    listed = _iptables("-S", "INPUT")
    if listed is None:
        return []
    rules = []
    for line in listed.stdout.splitlines():
        words = shlex.split(line)  # -A INPUT <rule>
        marked = any(a == "--comment" and b == namespace_of(subnet) for a, b in itertools.pairwise(words))
        if marked:
            rules.append(words[2:])
    return rules


def remove_subnet_leftovers(subnet: int) -> None:
    """Remove what an owner of ``subnet`` that is gone left behind. Call it only while
    holding the subnet's lock."""
    for rule in input_rules_of(subnet):
        removed = _iptables("-D", "INPUT", *rule)
        if removed is not None and removed.returncode != 0:
            raise RuntimeError(f"iptables kept {namespace_of(subnet)}'s INPUT rule: {removed.stderr}")
    namespace = namespace_of(subnet)
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        # Workers of a crashed test run, still running in the namespace.
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", namespace, check=False)
    # Deleting the namespace destroys the veth end in it, and with it the pair; the
    # root end alone is left where the namespace was never made.
    _ip("link", "del", veth_of(subnet), check=False)


def remove_unowned_leftovers() -> None:
    """Every subnet whose owner is gone: a namespace, veth or INPUT rule of ours
    without a lock held."""
    listed = _ip("netns", "list", check=False).stdout.split()
    links = _ip("-o", "link", "show", check=False).stdout
    found = {name.removeprefix(NAMESPACE_PREFIX) for name in listed if name.startswith(NAMESPACE_PREFIX)}
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(VETH_PREFIX) and name[len(VETH_PREFIX) :].isdigit():
            found.add(name[len(VETH_PREFIX) :])
    rules = _iptables("-S", "INPUT")
    for line in rules.stdout.splitlines() if rules is not None else []:
        words = shlex.split(line)
        found.update(b.removeprefix(NAMESPACE_PREFIX) for a, b in itertools.pairwise(words)
                     if a == "--comment" and b.startswith(NAMESPACE_PREFIX))  # fmt: skip
    for text in found:
        if not text.isdigit():
            continue
        lock = _try_lock(int(text))
        if lock is not None:
            try:
                remove_subnet_leftovers(int(text))
            finally:
                lock.close()


def _try_lock(subnet: int) -> IO[bytes] | None:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    handle = (LOCK_DIR / f"{subnet}.lock").open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_subnet() -> tuple[int, IO[bytes]]:
    # Start at a place of this process's own, so that parallel test processes rarely
    # try the same locks.
    start = os.getpid() % len(SUBNETS)
    for offset in range(len(SUBNETS)):
        subnet = SUBNETS[(start + offset) % len(SUBNETS)]
        lock = _try_lock(subnet)
        if lock is not None:
            remove_subnet_leftovers(subnet)
            return subnet, lock
    raise RuntimeError(f"every test host subnet {SUBNET_PREFIX}.1-254.0/24 is in use")


class TcpForwarders:
    """TCP forwarders on one event loop in a thread of the test process: each listens
    on an address a test host can reach and pipes every connection to a target that
    only the root namespace can reach."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-forwarders", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = threading.Event()
        self._thread.start()

    def add(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(
                lambda reader, writer: self._pipe(reader, writer, target), *listen, reuse_address=True
            )

        self._servers.append(asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=10))

    def cut(self) -> None:
        """Make the targets look down: drop every connection, and close new ones as soon
        as they are accepted, until ``restore``."""
        self._cut.set()

        async def drop_all() -> None:
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(drop_all(), self._loop).result(timeout=10)

    def restore(self) -> None:
        self._cut.clear()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        if self._cut.is_set():
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))
        finally:
            self._writers.difference_update((writer, upstream_writer))

    def close(self) -> None:
        async def close_all() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        # Either side closing ends the connection: neither PostgreSQL's nor Redis's
        # protocol uses half-closed connections.
        sink.close()


@dataclass
class WorkerHost:
    """One namespace with its addresses; ``label`` is its hostname."""

    label: str
    subnet: int
    lock: IO[bytes] = field(repr=False)

    @property
    def namespace(self) -> str:
        return namespace_of(self.subnet)

    @property
    def gateway(self) -> str:
        """The root namespace's address on this host's link: where the forwarders listen."""
        return f"{SUBNET_PREFIX}.{self.subnet}.1"

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.2"

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host: in its namespace, with its own hostname."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.label, *argv]  # fmt: skip

    def reachable_url(self, url: str) -> str:
        """``url`` (of a service on 127.0.0.1) as this host reaches it: at the gateway."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.gateway}:{parts.port}"))


def _make_host(label: str, subnet: int, lock: IO[bytes], ports: list[int]) -> WorkerHost:
    host = WorkerHost(label, subnet, lock)
    namespace, veth = host.namespace, veth_of(subnet)
    for port in ports:
        added = _iptables("-I", "INPUT", "-i", veth, "-d", host.gateway, "-p", "tcp", "--dport", str(port),
                          "-m", "comment", "--comment", namespace, "-j", "ACCEPT")  # fmt: skip
        if added is not None and added.returncode != 0:
            raise RuntimeError(f"iptables refused {namespace}'s INPUT rule: {added.stderr}")
    _ip("netns", "add", namespace)
    _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p", "netns", namespace)
    _ip("addr", "add", f"{host.gateway}/24", "dev", veth)
    _ip("link", "set", veth, "up")
    _ip("-n", namespace, "link", "set", f"{veth}p", "name", "eth0")
    _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
    _ip("-n", namespace, "link", "set", "eth0", "up")
    _ip("-n", namespace, "link", "set", "lo", "up")
    return host


@contextlib.contextmanager
def separate_hosts(labels: list[str], services: list[str]) -> Iterator[list[WorkerHost]]:
    """Hosts named ``labels``, each reaching the services at ``services`` (URLs of
    services on 127.0.0.1, e.g. the database and the broker) through a forwarder on
    its gateway. Everything is removed on exit, whatever happened."""
    if os.geteuid() != 0:
        raise RuntimeError("test hosts need root (network namespaces)")
    remove_unowned_leftovers()
    hosts: list[WorkerHost] = []
    forwarders = TcpForwarders()
    targets = set()
    for url in services:
        parts = urlsplit(url)
        if not (parts.hostname and parts.port):
            raise ValueError(f"{url} needs a host and a port")
        targets.add((parts.hostname, parts.port))
    try:
        for label in labels:
            subnet, lock = claim_subnet()
            try:
                hosts.append(_make_host(label, subnet, lock, sorted({port for _, port in targets})))
            except BaseException:
                remove_subnet_leftovers(subnet)
                lock.close()
                raise
            for target in sorted(targets):
                forwarders.add((hosts[-1].gateway, target[1]), target)
        yield hosts
    finally:
        forwarders.close()
        for host in hosts:
            remove_subnet_leftovers(host.subnet)
            host.lock.close()
