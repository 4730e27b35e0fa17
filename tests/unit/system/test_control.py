"""The control channel's protocol (system/control.py), with a stand-in for
the CPU thread that calls ``service()`` between slices."""

import json
import os
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from drivebay.errors import ConfigError
from drivebay.system import control


class Loop:
    """What the run loop does with the server: poll ``service`` until it says stop."""

    def __init__(self, server, interrupted=None):
        self.server = server
        self.slices = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interrupted,), daemon=True)
        self.thread.start()

    def _run(self, interrupted):
        while not self.server.service(interrupted):
            self.slices += 1
            time.sleep(0.001)
        self.stopped.set()


def vm_at(folder, name="box"):
    return SimpleNamespace(name=name, path=os.path.join(folder, name + ".vm"))


@pytest.fixture
def vm(tmp_path):
    return vm_at(str(tmp_path))


def test_status_pause_resume_poweroff(vm):
    calls = []
    with control.ControlServer(control.socket_path(vm), {"echo": lambda **a: calls.append(a) or a},
                               status=lambda: {"virtual_ns": 42}) as server:
        loop = Loop(server)
        assert control.request(vm, "status") == {"state": "running", "virtual_ns": 42}
        assert control.request(vm, "echo", x=1, y="z") == {"x": 1, "y": "z"}
        assert calls == [{"x": 1, "y": "z"}]
        assert control.request(vm, "pause") == {"state": "paused"}
        before = loop.slices
        time.sleep(0.2)
        assert loop.slices == before                      # the CPU thread waits
        assert control.request(vm, "status")["state"] == "paused"   # and still answers
        with pytest.raises(ConfigError, match="already paused"):
            control.request(vm, "pause")
        assert control.request(vm, "resume") == {"state": "running"}
        with pytest.raises(ConfigError, match="not paused"):
            control.request(vm, "resume")
        assert control.request(vm, "poweroff") == {"state": "poweroff"}
        assert loop.stopped.wait(5)
    assert not os.path.exists(control.socket_path(vm))


def test_ctrl_c_ends_a_pause(vm):
    hit = []
    with control.ControlServer(control.socket_path(vm)) as server:
        loop = Loop(server, interrupted=lambda: bool(hit))
        control.request(vm, "pause")
        hit.append(True)
        assert loop.stopped.wait(5)


def test_refusals_name_the_problem(vm):
    def fails(**a):
        raise ConfigError("no such snapshot")

    with control.ControlServer(control.socket_path(vm), {"fails": fails,
                                                         "boom": lambda: 1 / 0}) as server:
        Loop(server)
        with pytest.raises(ConfigError, match="box.*fails: no such snapshot"):
            control.request(vm, "fails")
        with pytest.raises(ConfigError, match="unknown operation 'nope'.*pause"):
            control.request(vm, "nope")
        with pytest.raises(ConfigError, match="internal error: ZeroDivisionError"):
            control.request(vm, "boom")
        with pytest.raises(ConfigError, match="unexpected keyword|positional"):
            control.request(vm, "status", bogus=1)
        # Raw clients: not JSON, not an object, a line too long.
        for raw, expect in [(b"hello\n", "bad request"), (b"[1]\n", "bad request")]:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(control.socket_path(vm))
                s.sendall(raw)
                reply = json.loads(s.makefile().readline())
            assert reply["ok"] is False and expect in reply["error"]
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(control.socket_path(vm))
            # More than a socket buffer holds: the server stops reading at
            # MAX_REQUEST and hangs up, so the writer gets EPIPE, not a timeout.
            with pytest.raises(OSError) as refused:
                s.sendall(b"x" * (8 << 20))
            assert not isinstance(refused.value, TimeoutError)
        assert control.request(vm, "status")["state"] == "running"   # still serving


def test_a_request_to_a_stopped_vm_is_refused_clearly(vm):
    with pytest.raises(ConfigError, match="'box' does not answer on its control channel"):
        control.request(vm, "status")
    # A dead process's socket file: nothing listens.
    s = socket.socket(socket.AF_UNIX)
    s.bind(control.socket_path(vm))
    s.close()
    with pytest.raises(ConfigError, match="'box' does not answer on its control channel"):
        control.request(vm, "status")
    # The next run replaces it.
    with control.ControlServer(control.socket_path(vm)) as server:
        Loop(server)
        assert control.request(vm, "status")["state"] == "running"


def test_requests_queued_at_power_off_are_answered(vm):
    server = control.ControlServer(control.socket_path(vm))   # nobody services it
    answers = []
    t = threading.Thread(target=lambda: answers.append(
        pytest.raises(ConfigError, control.request, vm, "status", match="powered off")))
    t.start()
    time.sleep(0.2)
    server.close()
    t.join(5)
    assert answers and not t.is_alive()


def test_a_folder_path_longer_than_a_socket_address(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    vm = vm_at(str(deep), "long-" + "n" * 40)
    assert len(control.socket_path(vm)) > 108
    with control.ControlServer(control.socket_path(vm)) as server:
        Loop(server)
        assert control.request(vm, "status")["state"] == "running"
        assert oct(os.stat(control.socket_path(vm)).st_mode & 0o777) == "0o700"


def test_progress_reports_reach_the_client(vm):
    def slow(progress, steps):
        for i in range(steps + 1):
            progress(i, steps)
            time.sleep(0.15)                 # the server forwards what it has every 0.1 s
        return {"steps": steps}

    seen = []
    with control.ControlServer(control.socket_path(vm), {"slow": slow},
                               with_progress=("slow",)) as server:
        Loop(server)
        assert control.request(vm, "slow", steps=4,
                               progress=lambda d, t: seen.append((d, t))) == {"steps": 4}
    assert seen[-1] == (4, 4) and len(seen) >= 3 and seen == sorted(seen)
