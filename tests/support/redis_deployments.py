"""Real Redis deployments for tests, each of its own on 127.0.0.1 in its own folder and killed at
the end: a TLS server whose certificates come from a private CA (trustme), a server on a unix
socket, a primary with a replica watched by a sentinel (optionally each with a password: the
data nodes one, the sentinel another), and a Redis Cluster of three primaries.
Debian's redis-server runs them all (a sentinel is `redis-server --sentinel`); redis-cli, which
comes with it (redis-tools), joins the cluster."""

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import attrs
import trustme
from attrs import Factory, define

from trioproxy.quota.redis.client import RedisAccess
from trioproxy.testing.ports import free_port

NO_PERSISTENCE = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
SERVICE = "ledger"  # the sentinel's name for the primary
DATA_PASSWORD = "data-nodes-secret"  # with `passwords`: the primary's and replica's (in redis_url)
SENTINEL_PASSWORD = "sentinel-secret"  # and the sentinel's own (redis_sentinel_password)
START_SECONDS = 20.0  # a cluster's join takes about 2 s; a busy machine may take longer


@define
class Deployment:
    url: str
    access: RedisAccess = RedisAccess()  # TLS files, the sentinels' password
    wrong_ca: str = ""  # a CA that did not sign the server's certificate
    processes: dict[str, subprocess.Popen[bytes]] = Factory(dict)  # by role: "primary", "replica", ...
    ports: dict[str, int] = Factory(dict)


def _cli(port: int, *command: str) -> str:
    """A command through redis-cli (TLS options first, if any); its output, or "" if it failed."""
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command], capture_output=True, timeout=10, check=False)
    return done.stdout.decode() if done.returncode == 0 else ""


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {START_SECONDS:.0f} s")
        time.sleep(0.05)


def _accepts(address: tuple[str, int] | str) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(address)
            return True
        except OSError:
            return False


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(10)


def _start(stack: ExitStack, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    """One redis-server (or sentinel: its config file first) working in `folder`."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is missing: ./scripts/test installs Debian's redis-server"
    folder.mkdir(parents=True, exist_ok=True)
    command = [binary, *args, *NO_PERSISTENCE, "--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(_kill, process)
    return process


@define
class Certificates:
    """A private CA's files: the server's pair (for 127.0.0.1), the client's, and a stranger CA."""

    client: RedisAccess
    wrong_ca: str
    server_args: list[str]  # redis-server's TLS options; it asks clients for a certificate (its default)


def _certificates(folder: Path) -> Certificates:
    ca, stranger = trustme.CA(), trustme.CA()
    files = {name: folder / f"{name}.pem" for name in ("ca", "wrong-ca", "server", "server-key", "client", "client-key")}
    folder.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(files["ca"])
    stranger.cert_pem.write_to_path(files["wrong-ca"])
    for name, cert in (("server", ca.issue_cert("127.0.0.1", "localhost")), ("client", ca.issue_cert("trioproxy-client"))):
        cert.cert_chain_pems[0].write_to_path(files[name])
        cert.private_key_pem.write_to_path(files[f"{name}-key"])
    server_args = ["--tls-cert-file", str(files["server"]), "--tls-key-file", str(files["server-key"]),
                   "--tls-ca-cert-file", str(files["ca"])]
    return Certificates(RedisAccess(str(files["ca"]), str(files["client"]), str(files["client-key"])), str(files["wrong-ca"]), server_args)


def _listening(certificates: Certificates, tls: bool) -> tuple[Callable[[int], list[str]], list[str], RedisAccess]:
    """redis-server's options to listen on a port (TLS only, and TLS to its peers, with `tls`),
    redis-cli's options to talk to it, and the client's TLS files."""
    client = certificates.client
    if not tls:
        return (lambda port: ["--port", str(port)]), [], RedisAccess()
    return (
        lambda port: ["--port", "0", "--tls-port", str(port), "--tls-replication", "yes", "--tls-cluster", "yes", *certificates.server_args],
        ["--tls", "--cacert", client.ca, "--cert", client.cert, "--key", client.key],
        client,
    )


@contextmanager
def tls_redis(folder: Path) -> Iterator[Deployment]:
    """A server on a TLS port only, with a certificate for 127.0.0.1 from a private CA; it asks
    clients for a certificate too (Redis's default), so the client's pair comes from that CA."""
    certificates = _certificates(folder / "certificates")
    port = free_port()
    with ExitStack() as stack:
        process = _start(stack, folder, "--port", "0", "--tls-port", str(port), *certificates.server_args)
        _wait_until(lambda: _accepts(("127.0.0.1", port)), "redis-server on a TLS port")
        yield Deployment(f"rediss://127.0.0.1:{port}/0", certificates.client, certificates.wrong_ca, {"server": process}, {"server": port})


@contextmanager
def unix_socket_redis(folder: Path) -> Iterator[Deployment]:
    """A server on a unix socket only (no TCP port). The socket lives in a short folder of its
    own: a socket's path has a limit of about 100 bytes, and test folders are long."""
    with ExitStack() as stack:
        socket_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redis-")))
        path = str(socket_folder / "redis.sock")
        process = _start(stack, folder, "--port", "0", "--unixsocket", path, "--unixsocketperm", "700")
        _wait_until(lambda: _accepts(path), "redis-server on a unix socket")
        yield Deployment(f"unix://{path}?db=0", processes={"server": process})


@contextmanager
def sentinel_redis(folder: Path, tls: bool = False, passwords: bool = False) -> Iterator[Deployment]:
    """A primary, its replica, and one sentinel that watches them (a quorum of one, so it alone
    can fail over: it marks the primary down after 500 ms without an answer); with `tls`, all
    three speak TLS only, to clients and to each other; with `passwords`, the data nodes ask for
    DATA_PASSWORD and the sentinel for SENTINEL_PASSWORD (requirepass)."""
    primary, replica, sentinel = free_port(), free_port(), free_port()
    listen, cli, client = _listening(certificates := _certificates(folder / "certificates"), tls)
    data_auth = ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD] if passwords else []
    cli_data, cli_sentinel = _auth(cli, DATA_PASSWORD if passwords else ""), _auth(cli, SENTINEL_PASSWORD if passwords else "")
    config = folder / "sentinel" / "sentinel.conf"
    config.parent.mkdir(parents=True)
    config.write_text(
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 500\nsentinel failover-timeout {SERVICE} 5000\n"
        + (f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}\nrequirepass {SENTINEL_PASSWORD}\n" if passwords else "")
    )
    with ExitStack() as stack:
        processes = {
            # A replica's first sync starts at once, not after the default 5 s of waiting for others.
            "primary": _start(stack, folder / "primary", *listen(primary), *data_auth, "--repl-diskless-sync-delay", "0"),
            "replica": _start(stack, folder / "replica", *listen(replica), *data_auth, "--replicaof", "127.0.0.1", str(primary)),
        }
        # Started once the replica is linked, the sentinel finds it at its first look at the
        # primary rather than at its next, up to 10 s later.
        _wait_until(lambda: "master_link_status:up" in _cli(replica, *cli_data, "info", "replication"), "the replica's link to its primary")
        processes["sentinel"] = _start(stack, config.parent, str(config), "--sentinel", *listen(sentinel))
        _wait_until(lambda: f"{replica}" in _cli(sentinel, *cli_sentinel, "sentinel", "replicas", SERVICE), "the sentinel's view of the replica")
        credentials = f":{DATA_PASSWORD}@" if passwords else ""
        access = attrs.evolve(client, sentinel_password=SENTINEL_PASSWORD) if passwords else client
        yield Deployment(f"{'rediss' if tls else 'redis'}+sentinel://{credentials}127.0.0.1:{sentinel}/{SERVICE}/0", access,
                         certificates.wrong_ca, processes, {"primary": primary, "replica": replica, "sentinel": sentinel})


def _auth(cli: list[str], password: str) -> list[str]:
    """redis-cli's options with the password, if any (and without its warning about one on the command line)."""
    return [*cli, "--no-auth-warning", "-a", password] if password else cli


CREATE_SECONDS = 30  # redis-cli --cluster create takes 2-4 s; seen once to wait forever


@contextmanager
def redis_cluster(folder: Path, tls: bool = False, ports: list[int] | None = None) -> Iterator[Deployment]:
    """Three primaries sharing the 16,384 slots (on `ports`, or free ones), joined by redis-cli
    --cluster create; with `tls`, clients and the cluster bus speak TLS only (certificates as
    for tls_redis). A create that hangs (redis-cli waits without end for nodes to agree) is
    tried once more on fresh nodes, on fresh ports unless `ports` were given; a second hang
    raises with what the nodes logged."""
    certificates = _certificates(folder / "certificates")
    for attempt in (1, 2):
        with ExitStack() as stack:
            try:
                cluster = _joined_cluster(stack, folder / f"attempt{attempt}", certificates, tls,
                                          ports or cluster_ports())
            except subprocess.TimeoutExpired:
                if attempt == 2:
                    raise AssertionError(f"redis-cli --cluster create hung twice; the nodes logged:\n"
                                         f"{_logs_tail(folder / f'attempt{attempt}')}") from None
                continue
            yield cluster
            return


def _joined_cluster(stack: ExitStack, folder: Path, certificates: Certificates, tls: bool,
                    ports: list[int]) -> Deployment:
    """Three cluster nodes started on `stack` and joined; raises TimeoutExpired if the join hangs."""
    listen, cli, client = _listening(certificates, tls)
    processes = {
        f"node{i}": _start(stack, folder / f"node{i}", *listen(port), "--cluster-enabled", "yes",
                           "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        for i, port in enumerate(ports)
    }
    for port in ports:
        _wait_until(lambda: _accepts(("127.0.0.1", port)), f"cluster node on port {port}")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    subprocess.run(["redis-cli", *cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                   capture_output=True, timeout=CREATE_SECONDS, check=True)
    for port in ports:
        _wait_until(lambda: "cluster_state:ok" in _cli(port, *cli, "cluster", "info"), f"cluster node on port {port}")
    return Deployment(f"{'rediss' if tls else 'redis'}+cluster://{nodes[0]},{nodes[1]}", client, certificates.wrong_ca,
                      processes, {f"node{i}": port for i, port in enumerate(ports)})


def _logs_tail(folder: Path, lines: int = 15) -> str:
    return "\n".join(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in sorted(folder.glob("node*/redis.log")))


def cluster_ports() -> list[int]:
    """Three free ports whose cluster bus ports (10,000 above) are free and port numbers too."""
    return [_cluster_port() for _ in range(3)]


def _cluster_port() -> int:
    while True:
        port = free_port()  # this worker's own ports (see trioproxy/testing/ports.py)
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue


def slot_of(port: int, key: str) -> int:
    """The cluster slot Redis puts `key` in (CLUSTER KEYSLOT)."""
    return int(_cli(port, "cluster", "keyslot", key))


def keys_on(port: int) -> int:
    """How many keys one server holds."""
    return int(_cli(port, "dbsize").strip() or 0)


def replicated(primary: int, replica: int, password: str = "") -> bool:
    """Whether the replica has every write the primary has taken."""

    def offset(port: int, field: str) -> str:
        info = _cli(port, *_auth([], password), "info", "replication")
        lines = dict(line.split(":", 1) for line in info.split() if ":" in line)
        return lines.get(field, "?")

    return offset(primary, "master_repl_offset") == offset(replica, "slave_repl_offset")


def primary_of(sentinel: int, password: str = "") -> int:
    """The port the sentinel currently names as the primary."""
    return int(_cli(sentinel, *_auth([], password), "sentinel", "get-master-addr-by-name", SERVICE).split()[1])


DEPLOYMENTS: dict[str, Callable[[Path], AbstractContextManager[Deployment]]] = {
    "tls": tls_redis, "unix": unix_socket_redis, "sentinel": sentinel_redis, "cluster": redis_cluster,
    "tls-cluster": lambda folder: redis_cluster(folder, tls=True),
    "tls-sentinel": lambda folder: sentinel_redis(folder, tls=True),
    "sentinel-passwords": lambda folder: sentinel_redis(folder, passwords=True),
}
