"""A real two-node Patroni cluster on loopback, for tests: etcd, two Patroni nodes, the
pgserver wheel's PostgreSQL binaries.

``with patroni_cluster() as cluster:`` starts a one-member etcd and two Patroni nodes, each
with its own ports and data folder under ``ROOT/.data/patroni-<token>``, waits until one
node leads and the other streams from it, and always takes everything down again (every
process killed, the folder removed)::

    with patroni_cluster() as cluster:
        leader = cluster.leader()
        cluster.kill(leader)  # Patroni and PostgreSQL of that node, SIGKILL
        new_leader = cluster.wait_leader(not_node=leader)  # after the TTL (~10 s)
        cluster.start(leader)  # it comes back as a replica (pg_rewind)

Clients reach it as they would a production cluster: ``cluster.hosts``
(``127.0.0.1:p1,127.0.0.1:p2``) with ``target_session_attrs=read-write`` finds the
leader; superuser ``postgres`` with ``cluster.password``. The pgserver binaries are built
without OpenSSL: connect without TLS (``sslmode=disable`` or ``prefer``; asyncpg
``ssl=False``).

Everything here blocks. From an async test it may simply be called (nothing else runs
meanwhile); a test that keeps a service of its own loop running while it waits calls
the waits through ``asyncio.to_thread``.

PostgreSQL refuses to run as root, so as root (these machines) Patroni runs as the
embedded server's system user ``pgserver``, as :mod:`multidb_devstack.embedded` does;
its PostgreSQL children inherit that user. Needs Debian's ``patroni`` and ``etcd-server``
(``.ci/run`` installs them): :func:`patroni_available` says why not when they are missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from multidb.files import write_private

with warnings.catch_warnings():
    # pgserver asks platformdirs for XDG_RUNTIME_DIR at import; we never use that folder.
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
SYSTEM_USER = "pgserver"
# Failover comes ~TTL after the leader dies: the leader key outlives its holder by that
# much. Patroni's rule of thumb, loop_wait + 2 * retry_timeout <= ttl, keeps a leader that
# merely stalls on etcd or PostgreSQL for a moment from being demoted (1 + 2 * 4 <= 10);
# a loop every second makes the survivor act as soon as the key is gone.
TTL_S = 10
LOOP_WAIT_S = 1
RETRY_TIMEOUT_S = 4
BOOTSTRAP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.1

T = TypeVar("T")


class PatroniError(RuntimeError):
    """The cluster did not get where it was asked to within its deadline."""


def patroni_available() -> str | None:
    """None when Patroni, etcd and the pgserver binaries are here; else why not (one line,
    for ``pytest.skip``)."""
    missing = [name for name in ("patroni", "etcd") if shutil.which(name) is None]
    if missing:
        return (
            f"no {' and no '.join(missing)} on PATH (Debian: apt-get install patroni etcd-server)"
        )
    if not (POSTGRES_BIN_PATH / "postgres").exists():
        return f"no PostgreSQL binaries in {POSTGRES_BIN_PATH} (the pgserver wheel)"
    return None


def can_install_patroni() -> bool:
    """Whether ``.ci/run`` can install them here: root with apt-get, as it checks."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def require_patroni() -> None:
    """Skip the calling test with one line when Patroni or etcd is missing, but fail under
    CI (``CI`` set) where ``.ci/run`` could have installed them: no silent skip there."""
    reason = patroni_available()
    if reason is None:
        return
    if os.environ.get("CI") and can_install_patroni():
        pytest.fail(f"CI: {reason}; .ci/run installs them with apt-get")
    pytest.skip(reason)


def _free_ports(count: int) -> list[int]:
    # All held open at once, so the kernel never hands out the same one twice.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from blocking code, whether or not the caller's thread
    already runs an event loop (async tests call this harness): on a loop of its own in a
    thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie counts as gone: a killed postmaster's parent has left
    long ago, and the container's PID 1 reaps orphans only after a while."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in {"Z", "X"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found.extend(children)
        todo.extend(children)
    return found


def _wait_gone(pids: list[int], timeout_s: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            msg = f"processes {[p for p in pids if pid_alive(p)]} outlived SIGKILL"
            raise PatroniError(msg)
        time.sleep(0.02)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(eq=False)
class PatroniNode:
    """One member: its Patroni (REST API) and its PostgreSQL, in ``folder``."""

    name: str
    pg_port: int
    rest_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        """``127.0.0.1:<pg_port>``: where its PostgreSQL listens."""
        return f"{HOST}:{self.pg_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def data_dir(self) -> Path:
        return self.folder / "pgdata"

    @property
    def config_file(self) -> Path:
        return self.folder / "node.yml"

    @property
    def log_file(self) -> Path:
        """Patroni's log, and its PostgreSQL's (the postmaster inherits Patroni's stderr)."""
        return self.folder / "patroni.log"

    @property
    def patroni_pid(self) -> int | None:
        """Patroni itself (no wrapper: we start it with ``user=``, not ``runuser``)."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this node's data folder, from its ``postmaster.pid``."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # The pid may be reused since the file was written: check it is this node's server
        # (Patroni starts it as ``postgres -D <data_dir> ...``).
        if str(self.data_dir).encode() not in command or not pid_alive(pid):
            return None
        return pid

    def status(self, path: str = "/patroni") -> dict[str, Any] | None:
        """The node's REST API answer at ``path`` (any status code), None when unreachable."""
        try:
            answer = httpx.get(f"{self.rest_url}{path}", timeout=2)
        except httpx.TransportError:
            return None
        try:
            body: dict[str, Any] = answer.json()
        except ValueError:
            return None
        return body


@dataclass(eq=False)
class PatroniCluster:
    """A running two-node cluster: see the module's docstring."""

    folder: Path
    password: str
    replication_password: str
    nodes: tuple[PatroniNode, ...]
    etcd_port: int
    etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    user: str = SUPERUSER
    database: str = "postgres"
    as_user: str | None = None

    @property
    def hosts(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2``: every node's PostgreSQL (a multi-host ``DB_HOST``)."""
        return ",".join(node.address for node in self.nodes)

    @property
    def etcd_url(self) -> str:
        return f"http://{HOST}:{self.etcd_port}"

    def node(self, name: str) -> PatroniNode:
        return next(node for node in self.nodes if node.name == name)

    def cluster_status(self) -> dict[str, Any] | None:
        """Patroni's ``GET /cluster``, from the first node whose REST API answers."""
        for node in self.nodes:
            if node.patroni_pid is None:
                continue
            answer = node.status("/cluster")
            if answer is not None and "members" in answer:
                return answer
        return None

    def _member(self, role: str) -> PatroniNode | None:
        answer = self.cluster_status()
        for member in (answer or {}).get("members", []):
            if member.get("role") == role and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def leader(self) -> PatroniNode:
        """The node Patroni names leader now."""
        node = self._member("leader")
        if node is None:
            msg = f"no running leader in Patroni's /cluster: {self.cluster_status()}"
            raise PatroniError(msg)
        return node

    def replica(self) -> PatroniNode:
        """A running replica (with two nodes, the one that is not the leader)."""
        node = self._member("replica")
        if node is None:
            msg = f"no running replica in Patroni's /cluster: {self.cluster_status()}"
            raise PatroniError(msg)
        return node

    def connect_kwargs(self, node: PatroniNode | None = None) -> dict[str, Any]:
        """asyncpg.connect keywords: that node, or every node with ``read-write`` (the leader)."""
        nodes = [node] if node else list(self.nodes)
        return {
            "host": [n.host for n in nodes],
            "port": [n.pg_port for n in nodes],
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "ssl": False,  # the pgserver binaries have no TLS
            "target_session_attrs": "read-write",
            "timeout": 5,
        }

    def accepts_writes(self, node: PatroniNode) -> bool:
        """Whether ``node``'s PostgreSQL takes a write now (it assigns a transaction id)."""

        async def write() -> bool:
            kwargs = self.connect_kwargs(node)
            # Asked for this node alone: connect whatever it is, then see if it writes.
            kwargs["target_session_attrs"] = "any"
            conn = await asyncpg.connect(**kwargs)
            try:
                await conn.fetchval("SELECT pg_current_xact_id()")
            finally:
                await conn.close()
            return True

        try:
            return _run_async(write)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    def wait_for(self, check: Callable[[], T | None], what: str, timeout_s: float) -> T:
        """Poll ``check`` until it returns something other than None; fail naming ``what``
        (with /cluster and the nodes' logs) at the deadline, or as soon as a process of the
        cluster that should run has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_processes()
            found = check()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                msg = f"not within {timeout_s} s: {what}; /cluster: {self.cluster_status()}\n"
                msg += self._logs()
                raise PatroniError(msg)
            time.sleep(POLL_S)

    def _check_processes(self) -> None:
        if self.etcd is not None and self.etcd.poll() is not None:
            msg = f"etcd exited with {self.etcd.returncode}:\n{_tail(self.folder / 'etcd.log')}"
            raise PatroniError(msg)
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                msg = f"Patroni of {node.name} exited with {node.process.returncode}:\n"
                raise PatroniError(msg + _tail(node.log_file))

    def _logs(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{_tail(n.log_file)}" for n in self.nodes)

    def wait_healthy(self, timeout_s: float = 60.0) -> PatroniNode:
        """Wait until a leader runs and every other live node streams from it; the leader."""

        def healthy() -> PatroniNode | None:
            members = {m.get("name"): m for m in (self.cluster_status() or {}).get("members", [])}
            running = {name for name, m in members.items() if m.get("state") == "running"}
            leaders = [n for n in self.nodes if members.get(n.name, {}).get("role") == "leader"]
            if not leaders or leaders[0].name not in running:
                return None
            leader = leaders[0]
            # Both: pg_basebackup's WAL stream has the member's name too while the replica is
            # still being made ("creating replica"), and a running replica may not stream yet.
            streaming = {
                entry.get("application_name")
                for entry in (leader.status() or {}).get("replication", [])
                if entry.get("state") == "streaming"
            }
            others = [n for n in self.nodes if n is not leader and n.patroni_pid is not None]
            return leader if all(n.name in streaming & running for n in others) else None

        return self.wait_for(healthy, "a leader with every live node streaming from it", timeout_s)

    def wait_leader(
        self, not_node: PatroniNode | None = None, timeout_s: float = 60.0
    ) -> PatroniNode:
        """Wait until Patroni's /cluster names a running leader other than ``not_node`` and
        its PostgreSQL accepts writes; return it."""

        def new_leader() -> PatroniNode | None:
            node = self._member("leader")
            if node is None or node is not_node:
                return None
            return node if self.accepts_writes(node) else None

        what = "a writable leader" + (f" other than {not_node.name}" if not_node else "")
        return self.wait_for(new_leader, what, timeout_s)

    def kill(self, node: PatroniNode) -> None:
        """Crash ``node``: SIGKILL its Patroni (first, so it restarts nothing), then its
        postmaster and the postmaster's children, all at once, as a lost machine would.
        Its leader key in etcd lives on until the TTL ends; then the other node takes over.
        """
        if node.process is not None:
            # And what it runs at the moment (pg_basebackup, pg_rewind, a single-user
            # postgres), which would otherwise live on without it.
            helpers = _descendants(node.process.pid)
            for victim in (node.process.pid, *helpers):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            node.process.wait()
            node.process = None  # killed on purpose: wait_for no longer expects it to run
            _wait_gone(helpers)
        pid = node.postmaster_pid()
        if pid is not None:
            # Each child is a session leader of its own (PostgreSQL's setsid), so no process
            # group takes them all: gather them before their parent dies and they move.
            children = _children(pid)
            for victim in (pid, *children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            _wait_gone([pid, *children])

    def start(self, node: PatroniNode) -> None:
        """(Re)start ``node``'s Patroni: a killed node rejoins (as a replica once another
        leads; ``pg_rewind`` brings a diverged old leader back in line). Returns at once:
        :meth:`wait_healthy` waits for it to stream."""
        if node.patroni_pid is not None:
            return
        log = node.log_file.open("ab")
        entry = pwd.getpwnam(self.as_user) if self.as_user else None
        try:
            node.process = subprocess.Popen(
                [shutil.which("patroni") or "patroni", str(node.config_file)],
                cwd=node.folder,
                env=_patroni_environment(node),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A terminal's Ctrl-C is for pytest; our teardown stops Patroni.
                start_new_session=True,
                user=entry.pw_uid if entry else None,
                group=entry.pw_gid if entry else None,
                extra_groups=[] if entry else None,
            )
        finally:
            log.close()

    def close(self) -> None:
        """Kill every process of the cluster and remove its folder (also after a failure)."""
        errors = []
        for node in self.nodes:
            try:
                self.kill(node)
            except PatroniError as error:  # the other node and etcd go all the same
                errors.append(f"{node.name}: {error}")
        if self.etcd is not None:
            if self.etcd.poll() is None:
                self.etcd.kill()
            self.etcd.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        if errors:
            raise PatroniError("; ".join(errors))


def _patroni_environment(node: PatroniNode) -> dict[str, str]:
    # Nothing of ours leaks in (PG*, the virtualenv, PYTHONPATH): Patroni is Debian's
    # Python program. Its temporary files (initdb's password file) stay in the node's folder.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(node.folder),
        "TMPDIR": str(node.folder),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _node_config(cluster: PatroniCluster, node: PatroniNode) -> dict[str, Any]:
    hba = [
        f"local all {SUPERUSER} scram-sha-256",
        f"host replication {REPLICATION_USER} {HOST}/32 scram-sha-256",
        f"host all all {HOST}/32 scram-sha-256",
    ]
    return {
        "scope": f"multidb-{cluster.folder.name}",
        "namespace": "/multidb-tests/",
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"{HOST}:{node.rest_port}",
            "connect_address": f"{HOST}:{node.rest_port}",
        },
        "etcd3": {"hosts": [f"{HOST}:{cluster.etcd_port}"], "protocol": "http"},
        "bootstrap": {
            "dcs": {
                "ttl": TTL_S,
                "loop_wait": LOOP_WAIT_S,
                "retry_timeout": RETRY_TIMEOUT_S,
                "maximum_lag_on_failover": 1024 * 1024,
                "postgresql": {
                    # So that a killed old leader can come back as a replica (start()).
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {"wal_log_hints": "on", "max_connections": 100},
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{HOST}:{node.pg_port}",
            "connect_address": f"{HOST}:{node.pg_port}",
            "data_dir": str(node.data_dir),
            "bin_dir": str(POSTGRES_BIN_PATH),
            # Its default is under a home folder the system user does not have.
            "pgpass": str(node.folder / "pgpass"),
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": cluster.password},
                "replication": {
                    "username": REPLICATION_USER,
                    "password": cluster.replication_password,
                },
                "rewind": {"username": SUPERUSER, "password": cluster.password},
            },
            "pg_hba": hba,
            "parameters": {
                "unix_socket_directories": str(node.folder),
                "password_encryption": "scram-sha-256",
                "shared_buffers": "32MB",
            },
        },
        "watchdog": {"mode": "off"},
    }


def _prepare_folder(folder: Path, owner: str | None) -> None:
    """``folder`` private to ``owner`` (the server's system user), reachable through its
    parents, with the pgserver binaries and libraries readable by that user."""
    folder.mkdir(parents=True, mode=0o700)
    if owner is None:
        return
    entry = ensure_user_exists(owner)
    assert entry is not None
    ensure_prefix_permissions(folder)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    os.chown(folder, entry.pw_uid, entry.pw_gid)


def _start_etcd(cluster: PatroniCluster, peer_port: int) -> None:
    data = cluster.folder / "etcd"
    data.mkdir(mode=0o700)
    peer = f"http://{HOST}:{peer_port}"
    log = (cluster.folder / "etcd.log").open("ab")
    try:
        cluster.etcd = subprocess.Popen(
            [
                shutil.which("etcd") or "etcd",
                "--name=etcd0",
                f"--data-dir={data}",
                f"--listen-client-urls={cluster.etcd_url}",
                f"--advertise-client-urls={cluster.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=etcd0={peer}",
                f"--initial-cluster-token={cluster.folder.name}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()

    def healthy() -> bool | None:
        try:
            answer = httpx.get(f"{cluster.etcd_url}/health", timeout=1)
        except httpx.TransportError:
            return None
        return True if answer.status_code == 200 and answer.json().get("health") == "true" else None

    cluster.wait_for(healthy, "etcd answers healthy", 30.0)


@contextlib.contextmanager
def patroni_cluster(node_count: int = 2) -> Iterator[PatroniCluster]:
    """A fresh cluster of ``node_count`` Patroni nodes and one etcd, healthy (a leader, the
    others streaming from it) when it is yielded; always killed and removed afterwards."""
    reason = patroni_available()
    if reason is not None:
        raise PatroniError(reason)
    as_user = SYSTEM_USER if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: every pytest session sets /tmp/pytest-of-<user> back to
    # 0700, and the server's system user could no longer reach its data (see spare_cluster).
    folder = ROOT / ".data" / f"patroni-{secrets.token_hex(4)}"
    ports = _free_ports(2 + 2 * node_count)
    cluster = PatroniCluster(
        folder=folder,
        password=secrets.token_urlsafe(18),
        replication_password=secrets.token_urlsafe(18),
        etcd_port=ports[0],
        nodes=tuple(
            PatroniNode(
                name=f"node{i + 1}",
                pg_port=ports[2 + 2 * i],
                rest_port=ports[3 + 2 * i],
                folder=folder / f"node{i + 1}",
            )
            for i in range(node_count)
        ),
        as_user=as_user,
    )
    try:
        folder.mkdir(parents=True, mode=0o700)
        _start_etcd(cluster, peer_port=ports[1])
        for node in cluster.nodes:
            _prepare_folder(node.folder, as_user)
            # JSON is YAML: Patroni reads it with yaml.safe_load. Holds passwords: 0600.
            config = json.dumps(_node_config(cluster, node), indent=2).encode()
            write_private(node.config_file, config)
            if as_user:
                entry = pwd.getpwnam(as_user)
                os.chown(node.config_file, entry.pw_uid, entry.pw_gid)
            cluster.start(node)
        cluster.wait_healthy(BOOTSTRAP_TIMEOUT_S)
        yield cluster
    finally:
        cluster.close()
