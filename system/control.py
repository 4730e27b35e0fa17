"""The control channel into a running VM.

VBoxManage reaches a running VM through its session: ``controlvm`` pauses
it, powers it off, and ``snapshot take`` on a running VM asks the VM's own
process to switch its disks to new differencing images.  drivebay's
``vm start`` process listens for the same requests on a Unix socket beside
the VM file (``NAME.vm.ctl``, for its owner only) for as long as the VM runs.

The protocol is one JSON object per line each way.  A client sends
``{"op": OP, ...arguments}`` and reads back ``{"ok": true, ...results}`` or
``{"ok": false, "error": MESSAGE}``.

The socket's thread only queues a request.  The CPU thread runs it between
two slices of guest execution (``service``, which the run loop polls with its
``should_stop``), so a handler never sees a machine in the middle of an
instruction or of a port access, and may drain the disks and change their
images.  Pausing is the CPU thread waiting in ``service`` for the next
request; virtual time does not leap over the pause (boot/cpu.py caps how
far it moves between two looks).
"""

import contextlib
import json
import os
import queue
import socket
import stat
import threading

from drivebay.errors import ConfigError, DrivebayError

SUFFIX = ".ctl"
MAX_REQUEST = 64 * 1024          # a request line longer than this is refused
READ_TIMEOUT_S = 5.0             # a client that connects and says nothing is dropped
PAUSE_POLL_S = 0.05              # how often a paused VM looks at Ctrl-C
BUILT_IN = ("pause", "resume", "poweroff")     # what the server does itself


def socket_path(vm):
    return vm.path + SUFFIX


@contextlib.contextmanager
def _short_name(path):
    """``path`` as a name that fits sockaddr_un's 108 bytes: the folder
    through /proc/self/fd, which the kernel resolves like the real path."""
    folder, name = os.path.split(path)
    fd = os.open(folder or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


class _Job:
    def __init__(self, op, args):
        self.op = op
        self.args = args
        self.reply = None
        self.done = threading.Event()
        self.progress = queue.Queue()      # (done, total) reports for the client


class ControlServer:
    """Serve control requests for one running VM.

    ``handlers`` maps an op name to ``handler(**arguments) -> dict``; a
    handler raises DrivebayError (or ValueError/TypeError for bad arguments)
    to refuse.  ``status()`` adds fields to the answer to ``status``.  ``pause``, ``resume`` and ``poweroff`` are built in; the run
    loop polls ``service()``, which returns True once a poweroff was asked.
    """

    def __init__(self, path, handlers=None, status=None, with_progress=()):
        self.path = path
        self.handlers = dict(handlers or {})
        self.handlers.setdefault("status", self._status)
        self._status_extra = status
        self._with_progress = set(with_progress)
        self.paused = False
        self.poweroff_requested = False
        self._jobs = queue.Queue()
        self._closed = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with _short_name(path) as name:
                # The caller holds the VM's run lock: a socket left here is a
                # dead process's, not a running VM's.
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)
                old_umask = os.umask(0o077)
                try:
                    self._sock.bind(name)
                finally:
                    os.umask(old_umask)
            self._sock.listen(8)
        except OSError as e:
            self._sock.close()
            raise ConfigError(f"{path}: cannot open the VM's control socket: {e.strerror}") from None
        self._thread = threading.Thread(target=self._accept_loop, name="drivebay-control",
                                        daemon=True)
        self._thread.start()

    # -- the socket's thread ------------------------------------------------------------

    def _accept_loop(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return                                  # closed
            with conn:
                self._converse(conn)

    def _converse(self, conn):
        conn.settimeout(READ_TIMEOUT_S)
        try:
            line = _read_line(conn)
            conn.settimeout(None)       # answers and progress may take as long as the work
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                    raise ValueError("a request is an object with a string 'op'")
            except ValueError as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            else:
                reply = self._run(request.pop("op"), request, lambda m: _send(conn, m))
            _send(conn, reply)
        except (OSError, ConfigError):
            pass                                        # the client went away

    def _run(self, op, args, send):
        if op not in self.handlers and op not in BUILT_IN:
            return {"ok": False, "error": f"unknown operation {op!r} (known: "
                    f"{', '.join(sorted({*self.handlers, *BUILT_IN}))})"}
        job = _Job(op, args)
        self._jobs.put(job)
        while not job.done.wait(0.1):
            self._send_progress(job, send)
            if self._closed.is_set():
                # close() answers what is still queued; a job the CPU thread
                # took just before the end finishes or is answered here.
                job.done.wait(1.0)
                break
        self._send_progress(job, send)
        return job.reply or {"ok": False, "error": "the VM powered off"}

    @staticmethod
    def _send_progress(job, send):
        last = None
        while True:
            try:
                last = job.progress.get_nowait()
            except queue.Empty:
                break
        if last is not None:
            send({"progress": list(last)})

    # -- the CPU thread -----------------------------------------------------------------

    def service(self, interrupted=None):
        """Run the queued requests; while paused, wait for more.  Returns True
        when the VM is to power off.  ``interrupted()`` (Ctrl-C) ends a pause."""
        if not self.paused and self._jobs.empty():      # every slice: the usual answer
            return self.poweroff_requested
        while True:
            try:
                job = self._jobs.get(block=self.paused, timeout=PAUSE_POLL_S)
            except queue.Empty:
                if not self.paused:
                    return self.poweroff_requested
                if interrupted is not None and interrupted():
                    return True
                continue
            self._do(job)
            if self.poweroff_requested:
                return True

    def _do(self, job):
        op = job.op
        try:
            if op == "pause":
                if self.paused:
                    raise ConfigError("the VM is already paused")
                self.paused = True
                job.reply = {"ok": True, "state": "paused"}
            elif op == "resume":
                if not self.paused:
                    raise ConfigError("the VM is not paused")
                self.paused = False
                job.reply = {"ok": True, "state": "running"}
            elif op == "poweroff":
                self.poweroff_requested = True
                job.reply = {"ok": True, "state": "poweroff"}
            else:
                args = dict(job.args)
                if op in self._with_progress:
                    args["progress"] = lambda done, total: job.progress.put((done, total))
                job.reply = {"ok": True, **(self.handlers[op](**args) or {})}
        except (DrivebayError, ValueError, TypeError) as e:
            job.reply = {"ok": False, "error": str(e)}
        except Exception as e:                          # a bug: tell the client, keep running
            job.reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        finally:
            job.done.set()

    def _status(self):
        extra = self._status_extra() if self._status_extra is not None else {}
        return {"state": "paused" if self.paused else "running", **extra}

    def close(self):
        """Stop listening, remove the socket, answer what is still queued."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            job.reply = {"ok": False, "error": "the VM powered off"}
            job.done.set()
        self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _send(conn, message):
    conn.sendall(json.dumps(message).encode() + b"\n")


def _read_line(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ConfigError(f"a control request is longer than {MAX_REQUEST} bytes")
    return data.decode("utf-8", "replace")


def request(vm, op, timeout_s=600.0, progress=None, **args):
    """Send ``op`` to the running VM ``vm``; returns the reply's fields or
    raises ConfigError with the VM's answer.  ``progress(done, total)`` gets
    the reports of a long operation (a snapshot deletion's merge)."""
    path = socket_path(vm)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_s)
    try:
        try:
            with _short_name(path) as name:
                sock.connect(name)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ConfigError(f"The machine '{vm.name}' does not answer on its control "
                              f"channel {path}: it is not running, still starting, or run by "
                              f"a program that serves none") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot reach the VM '{vm.name}': {e.strerror}") from None
        try:
            _send(sock, {"op": op, **args})
            reader = sock.makefile("rb")
            while True:
                reply = _parse(reader.readline(MAX_REQUEST))
                if not (isinstance(reply, dict) and "progress" in reply):
                    break
                if progress is not None:
                    progress(*reply["progress"])
        except socket.timeout:
            raise ConfigError(f"The machine '{vm.name}' did not answer '{op}' within "
                              f"{timeout_s:g} s") from None
        except OSError as e:
            raise ConfigError(f"{path}: the VM '{vm.name}' closed its control channel: "
                              f"{e.strerror}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise ConfigError(f"The machine '{vm.name}' gave no answer to '{op}' "
                          f"(it may have powered off)")
    if not reply.get("ok"):
        raise ConfigError(f"The machine '{vm.name}': {op}: {reply.get('error')}")
    reply.pop("ok")
    return reply


def _parse(line):
    try:
        return json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
