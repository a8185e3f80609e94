"""The local port of spawned jobs (#30: two pipelines started together once shared one and hung)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from lightning_nas.distributed import PORT_ENV, PORT_OWNER_ENV, reserve_local_port


def test_each_process_draws_its_own_free_port_and_keeps_the_users(monkeypatch):
    for name in ("MASTER_PORT", PORT_ENV, PORT_OWNER_ENV):
        monkeypatch.delenv(name, raising=False)
    port = reserve_local_port()
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert 10_000 <= port < ephemeral and os.environ[PORT_ENV] == str(port)  # never one the kernel hands out
    with socket.socket() as s:
        s.bind(("", port))  # free
    assert reserve_local_port() == port  # this process's later launches reuse it
    # a process started from this one inherits the variables and draws its own
    code = ("import os; from lightning_nas.distributed import reserve_local_port as r; "
            "print(r(), os.environ.get('MASTER_PORT'))")

    def child(**extra) -> list[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **extra}).stdout.split()

    children = [int(child()[0]) for _ in range(3)]
    assert all(10_000 <= p < ephemeral for p in children) and children != [port] * 3  # (inherited: all three equal)
    # the MASTER_PORT that Lightning leaves behind in a process that spawned ranks is not a launcher's choice
    drawn, master = child(MASTER_PORT=str(port))
    assert drawn != "None" and master == "None"
    # but a rank that Lightning's `ddp` launcher started (LOCAL_RANK set) keeps the job's port
    assert child(MASTER_PORT=str(port), LOCAL_RANK="1") == ["None", str(port)]
    monkeypatch.setenv(PORT_ENV, "23456")  # the user's own choice (no owner) is left alone
    monkeypatch.delenv(PORT_OWNER_ENV)
    assert reserve_local_port() is None and os.environ[PORT_ENV] == "23456"
    monkeypatch.setenv("MASTER_PORT", "29500")  # as torchrun sets it
    monkeypatch.setenv(PORT_OWNER_ENV, "1")
    assert reserve_local_port() is None
