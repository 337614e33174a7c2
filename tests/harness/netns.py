"""Hosts of their own on one machine: a network namespace per host, each
with a veth pair to a bridge in the root namespace and an address of its
own, so a host's link can be taken down (a network partition) while its
processes keep running. Needs root (`ip netns`, `ip link`)."""

import os
import subprocess


def ip(*argv, ns=None):
    command = ["ip", *argv] if ns is None else ["ip", "netns", "exec", ns, "ip", *argv]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr.strip()}")


class Network:
    """A bridge 10.<subnet>.0.254/24 in the root namespace (where the
    harness runs) and hosts added to it, each 10.<subnet>.0.<n>."""

    def __init__(self):
        if os.geteuid() != 0:
            raise SystemExit("network partitions need root (ip netns, veth pairs)")
        # Names of at most 15 characters, distinct per run.
        self.tag = f"{os.getpid() % 10000:04d}"
        self.subnet = 100 + os.getpid() % 100
        self.bridge = f"eb{self.tag}"
        self.hosts = {}
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"10.{self.subnet}.0.254/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, name):
        """A namespace for `name`, linked to the bridge; its address."""
        n = len(self.hosts) + 1
        ns, link = f"eddy{self.tag}-{name}", f"e{self.tag}h{n}"
        address = f"10.{self.subnet}.0.{n}"
        ip("netns", "add", ns)
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", link, "master", self.bridge)
        ip("link", "set", link, "up")
        ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
        self.hosts[name] = (ns, link, address)
        return address

    def run_in(self, name):
        """The command prefix that runs a program on host `name`."""
        return ["ip", "netns", "exec", self.hosts[name][0]]

    def address(self, name):
        return self.hosts[name][2]

    def cut(self, name):
        """Takes `name`'s link down: its packets go nowhere, as when a
        switch port or a cable fails; its processes keep running."""
        ip("link", "set", self.hosts[name][1], "down")

    def heal(self, name):
        ip("link", "set", self.hosts[name][1], "up")

    def close(self):
        for ns, link, _ in self.hosts.values():
            subprocess.run(["ip", "link", "del", link], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
