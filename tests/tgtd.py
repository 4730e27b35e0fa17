"""A private tgtd (Debian package ``tgt``): the iSCSI target the initiator's
tests and bench/iscsi.py run against.

``Tgtd(workdir)`` starts a daemon on a free TCP port and a free control port
(``tgtd -f --iscsi portal=127.0.0.1:PORT -C N``); ``Tgtd.target()`` makes a
target with LUN 1 on a new backing file (CHAP accounts, target parameters,
read-only and thin LUNs) through ``tgtadm -C N``; ``stop()`` kills the
daemon by its pid.
"""

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time

MiB = 1 << 20
START_TIMEOUT = 10.0
CONTROL_DIR = "/var/run/tgtd"
SBIN = "/usr/sbin:/sbin"                     # where Debian puts them, on PATH or not
TGTD = shutil.which("tgtd") or shutil.which("tgtd", path=SBIN)
TGTADM = shutil.which("tgtadm") or shutil.which("tgtadm", path=SBIN)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_control_port():
    for _ in range(100):
        n = random.randrange(1000, 32000)     # tgtd takes 0..32767
        if not os.path.exists(os.path.join(CONTROL_DIR, f"socket.{n}")):
            return n
    raise RuntimeError("no free tgtd control port")


class Tgtd:
    """One running tgtd and the targets made on it."""

    def __init__(self, workdir, port=None, host="127.0.0.1"):
        if TGTD is None or TGTADM is None:
            raise RuntimeError("tgtd/tgtadm not installed (Debian package tgt; tests/run "
                               "installs it)")
        self.workdir = workdir
        self.host = host                 # any 127.x.y.z: Linux routes all of 127/8 to lo
        self.port = port or free_port(host)
        self.control = free_control_port()
        os.makedirs(CONTROL_DIR, exist_ok=True)      # tgtd's control sockets live here
        self.log = open(os.path.join(workdir, f"tgtd-{self.port}.log"), "wb")
        self.proc = subprocess.Popen(
            [TGTD, "-f", "--iscsi", f"portal={host}:{self.port}", "-C", str(self.control)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._tids = itertools.count(1)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tgtd exited at once (see {self.log.name})")
            ok = subprocess.run([TGTADM, "-C", str(self.control), "--lld", "iscsi", "--op",
                                 "show", "--mode", "target"], capture_output=True).returncode == 0
            if ok and self._listening():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tgtd did not start in {START_TIMEOUT} s")
            time.sleep(0.05)

    def _listening(self):
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def adm(self, *args):
        r = subprocess.run([TGTADM, "-C", str(self.control), "--lld", "iscsi", *map(str, args)],
                           capture_output=True, text=True, timeout=20)
        if r.returncode:
            raise RuntimeError(f"tgtadm {' '.join(map(str, args))}: {r.stdout}{r.stderr}")
        return r.stdout

    def target(self, name, size=16 * MiB, content=None, readonly=False, thin=False,
               users=(), outgoing=None, params=None, backing=None, initiators=None):
        """A target with LUN 1 backed by a new file (or the existing file
        ``backing``); returns a Target."""
        tid = next(self._tids)
        iqn = f"iqn.2026-01.org.drivebay.test:{name}"
        if backing is None:
            backing = os.path.join(self.workdir, f"{name}-{self.port}.img")
            with open(backing, "wb") as f:
                f.truncate(size)
                if content is not None:
                    f.write(content)
        self.adm("--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
        for key, value in (params or {}).items():
            self.adm("--op", "update", "--mode", "target", "--tid", tid, "--name", key,
                     "--value", value)
        self.adm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", 1, "-b", backing)
        lu = [f"readonly={int(readonly)}"] + (["thin_provisioning=1"] if thin else [])
        self.adm("--op", "update", "--mode", "logicalunit", "--tid", tid, "--lun", 1,
                 "--params", ",".join(lu))
        for user, password in users:
            self.adm("--op", "new", "--mode", "account", "--user", user, "--password", password)
            self.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", user)
        if outgoing:
            user, password = outgoing
            self.adm("--op", "new", "--mode", "account", "--user", user, "--password", password)
            self.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", user,
                     "--outgoing")
        if initiators is None:
            self.adm("--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL")
        for name in initiators or ():          # only these initiator IQNs may log in
            self.adm("--op", "bind", "--mode", "target", "--tid", tid, "--initiator-name", name)
        return Target(self, tid, iqn, backing)

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        for suffix in ("", ".lock"):
            try:
                os.unlink(os.path.join(CONTROL_DIR, f"socket.{self.control}{suffix}"))
            except OSError:
                pass


class Target:
    def __init__(self, tgtd, tid, iqn, backing):
        self.tgtd, self.tid, self.iqn, self.backing = tgtd, tid, iqn, backing

    def url(self, user=None, password=None, lun=1):
        cred = f"{user}%{password}@" if user is not None else ""
        return f"iscsi://{cred}{self.tgtd.host}:{self.tgtd.port}/{self.iqn}/{lun}"

    def file_bytes(self, offset=0, length=None):
        with open(self.backing, "rb") as f:
            f.seek(offset)
            return f.read() if length is None else f.read(length)

    def set_lun(self, **params):
        self.tgtd.adm("--op", "update", "--mode", "logicalunit", "--tid", self.tid, "--lun", 1,
                      "--params", ",".join(f"{k}={v}" for k, v in params.items()))
