"""The crash harness: a writer process killed at random points, then the image checked.

One trial:

1. a fresh image (or a differencing child over a parent full of data) is made;
2. a writer process (forked) opens it through BlockBackend, exactly as a VM
   does (locks, host cache on or off, I/O threads), and runs a seeded
   workload of asynchronous writes, zero writes, discards and flushes,
   unaligned and of every size; after each flush completes it reports the
   flush's index through a pipe;
3. the writer is killed with SIGKILL, either right before its k-th
   state-changing system call (pwrite, ftruncate, fallocate, fdatasync: k
   drawn uniformly over a whole run, so every step of every metadata update
   is a kill point) or after a random time;
4. ``drivebay img check`` must pass: no errors (exit 0; leaks, exit 3, are
   what an interrupted allocation leaves, as in qemu-img);
5. the data must hold every write acknowledged by a completed flush: a byte
   nothing touched after the last reported flush has the value it had then;
   a byte touched since has its old value or one written since (zero for a
   zero write; zero or unchanged for a discard, before and after);
6. a format that refuses a read-write open after a crash (Parallels: the
   in_use marker) is repaired with ``drivebay img check -r all``, which must
   leave it clean and reading the same; ``qemu-img check`` must pass where it
   reads the format as drivebay does (VMDK, Parallels);
7. a write to the crashed image (a VM restarted on it) reads back, and the
   image still passes ``img check``.

``kill_before_write`` kills a writer at one chosen write instead, for the
kill points the random trials found (test_kill_points.py).

Run it as a script for many trials: ``python tests/crash/crashlib.py --trials
2000 --formats vmdk,parallels``.  The test (test_crash.py) runs DRIVEBAY_CRASH_TRIALS
(default 100) per format, split between host cache on and off.
"""

import argparse
import contextlib
import io
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

MiB = 1 << 20
DISK_SIZE = 4 * MiB
VDI_BLOCK = 64 << 10          # small blocks: many allocations and block moves per workload
VHD_BLOCK = 128 << 10
VMDK_GRAIN = 16 << 10         # small grains: many grain allocations per workload
VMDK_NEW_GT_GRAIN = 8 << 10   # 512 entries of 8 KiB: one grain table covers the disk
PARALLELS_CLUSTER = 64 << 10
OPS_PER_RUN = 40
MAX_SPAN = 200 << 10
WRITE_CACHE = 256 << 10
PARENT = "parent"             # a differencing image's parent: copied to the work folder once
# vmdk: monolithicSparse (embedded descriptor); vmdk-split: twoGbMaxExtentSparse (descriptor
# file, extent file); vmdk-diff: a monolithicSparse child (zero grains are holes);
# vmdk-gt-diff: a child with zeroed-grain entries (version 2) whose grain tables are not
# allocated yet (as after a resize, or from a tool that allocates them lazily): new tables,
# their redundant copies and directory entries are written during the run.
# vmdk-stream: streamOptimized (compressed grain records, the tables and footer at the end).
FORMATS = ("raw", "vdi", "vhd", "vdi-diff", "vhd-diff", "vmdk", "vmdk-split", "vmdk-diff",
           "vmdk-gt-diff", "vmdk-stream", "parallels")
# A Parallels image a writer died with is still marked in use: like qemu-img, drivebay
# refuses to open it read-write until a repair clears the marker.
REPAIR_BEFORE_WRITING = ("parallels",)
# qemu-img check must pass too (after the repair, for those above) where it reads the format
# as drivebay does; its VDI and VHD checks count what drivebay calls leaks as errors.
QEMU_FORMATS = {"vmdk": "vmdk", "vmdk-split": "vmdk", "vmdk-diff": "vmdk",
                "vmdk-gt-diff": "vmdk", "vmdk-stream": "vmdk", "parallels": "parallels"}
SYSCALLS = ("pwrite", "pwritev", "ftruncate", "posix_fallocate", "fdatasync", "fsync")

# -- workloads -----------------------------------------------------------------------------------

def _span(rnd, size):
    if rnd.random() < 0.3:                            # on block boundaries, whole blocks
        unit = rnd.choice((512, 4096, VDI_BLOCK, VHD_BLOCK))
        offset = rnd.randrange(size // unit) * unit
        length = unit * rnd.randint(1, 3)
    else:
        offset = rnd.randrange(size)
        length = rnd.randint(1, MAX_SPAN)
    return offset, max(1, min(length, size - offset))


def workload(seed, size=DISK_SIZE, n=OPS_PER_RUN):
    """Deterministic ops: ("write", offset, length, data_seed), ("zeroes", offset,
    length), ("discard", offset, length), ("flush",); ends with a flush."""
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.15:
            ops.append(("flush",))
        elif r < 0.27:
            ops.append(("zeroes", *_span(rnd, size)))
        elif r < 0.33:
            ops.append(("discard", *_span(rnd, size)))
        else:
            ops.append(("write", *_span(rnd, size), rnd.getrandbits(32)))
    ops.append(("flush",))
    return ops


def op_data(op):
    return random.Random(op[3]).randbytes(op[2])


# -- the image under test ---------------------------------------------------------------------

def _creator(fmt):
    """``create(path, parent=None)`` for a crash format's images; the file suffix."""
    from drivebay.block.parallels import ParallelsDriver
    from drivebay.block.raw import RawDriver
    from drivebay.block.vdi import VdiDriver
    from drivebay.block.vhd import VhdDriver
    from drivebay.block.vmdk import VmdkDriver

    def vmdk(variant, grain, zeroed_grain=False):
        return lambda p, parent=None: VmdkDriver.create(
            p, None if parent else DISK_SIZE, variant=variant, parent=parent, grain_size=grain,
            zeroed_grain=zeroed_grain)
    base = fmt.removesuffix("-diff")
    return {"raw": lambda p, parent=None: RawDriver.create(p, DISK_SIZE),
            "vdi": lambda p, parent=None: VdiDriver.create(
                p, None if parent else DISK_SIZE, parent=parent, block_size=VDI_BLOCK),
            "vhd": lambda p, parent=None: VhdDriver.create(
                p, None if parent else DISK_SIZE, parent=parent, block_size=VHD_BLOCK),
            "vmdk": vmdk("dynamic", VMDK_GRAIN),
            "vmdk-split": vmdk("split2g", VMDK_GRAIN),
            "vmdk-stream": vmdk("stream", VMDK_GRAIN),
            "vmdk-gt": vmdk("dynamic", VMDK_NEW_GT_GRAIN, zeroed_grain=True),
            "parallels": lambda p, parent=None: ParallelsDriver.create(
                p, DISK_SIZE, cluster_size=PARALLELS_CLUSTER)}[base], base.split("-")[0]


def drop_grain_tables(path):
    """Clear every grain directory entry (both directories) of a new sparse VMDK:
    the tables' space stays inside overHead, unused, as in an image whose tables
    are allocated on first use."""
    from drivebay.block import vmdk_sparse as vs
    with open(path, "r+b") as f:
        hdr = vs.SPARSE_EXTENT_HEADER.unpack(f.read(vs.SPARSE_EXTENT_HEADER.size))
        gdes = -(-(-(-hdr.capacity // hdr.grainSize)) // hdr.numGTEsPerGT)
        for sector in (hdr.gdOffset, hdr.rgdOffset):
            f.seek(sector * 512)
            f.write(bytes(4 * gdes))


def make_template(folder, fmt):
    """Create the images a trial starts from in ``folder``/template (the image,
    its extent files, its parent: a VDI finds its parent in its own folder);
    returns (path of the image to write, initial content of the disk)."""
    from drivebay.block.drivers import open_image
    create, suffix = _creator(fmt)
    initial = bytearray(DISK_SIZE)
    os.makedirs(os.path.join(folder, "template"))
    template = os.path.join(folder, "template", f"disk.{suffix}")
    if fmt.endswith("-diff"):
        parent = os.path.join(folder, "template", f"{PARENT}.{suffix}")
        create(parent)
        rnd = random.Random(99)
        with open_image(parent, writable=True) as im:
            for off in range(0, DISK_SIZE, 3 * VHD_BLOCK):    # some blocks hold data, some not
                chunk = rnd.randbytes(VHD_BLOCK)
                im.write(off, chunk)
                initial[off:off + VHD_BLOCK] = chunk
        with open_image(parent) as p:
            create(template, parent=p)
    else:
        create(template)
    if fmt.startswith("vmdk-gt"):
        drop_grain_tables(template)
    return template, bytes(initial)


# -- the writer (runs in the forked child) ---------------------------------------------------------

def _arm(kill_at):
    """Count state-changing system calls; SIGKILL ourselves right before the
    ``kill_at``-th (0: never).  Returns the counter (a one-item list)."""
    import drivebay.block.driver as driver_module
    count = [0]

    def wrap(fn):
        def counted(*args, **kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return counted
    for name in SYSCALLS:
        if hasattr(os, name):
            setattr(os, name, wrap(getattr(os, name)))
    if driver_module._fallocate is not None:
        driver_module._fallocate = wrap(driver_module._fallocate)
    return count


def run_writer(path, ops, host_cache, report_fd, kill_at=0):
    """Open ``path`` as a VM would and run ``ops``; after each completed flush
    write its index to ``report_fd``.  Returns the system calls counted."""
    from drivebay.block.backend import BlockBackend
    from drivebay.block.io import IoThreads, Op, Request
    count = _arm(kill_at)
    io_threads = IoThreads(2)
    # A small write cache (host cache off): its drains, in the background too, are kill points.
    backend = BlockBackend.open(path, io=io_threads, host_cache=host_cache, discard=True,
                                write_cache_bytes=WRITE_CACHE)
    pending = []
    for i, op in enumerate(ops):
        kind = op[0]
        if kind == "write":
            req = Request(Op.WRITE, op[1], (op_data(op),))
        elif kind == "zeroes":
            req = Request(Op.WRITE_ZEROES, op[1], length=op[2])
        elif kind == "discard":
            req = Request(Op.DISCARD, op[1], length=op[2])
        else:
            req = Request(Op.FLUSH)
        backend.submit(req, pending.append)
        while not pending:
            io_threads.wait(1)
            io_threads.poll_completions()
        done = pending.pop()
        if not done.ok:
            raise done.error
        if kind == "flush":
            os.write(report_fd, struct.pack("<i", i))
    backend.close()
    io_threads.close()
    return count[0]


def kill_before_write(path, action, target, truncate_target=None):
    """Open ``path`` read-write in a forked child and run ``action(image)``;
    the child is killed (SIGKILL) right before its first write for which
    ``target(offset, data)`` is true, or its first truncation for which
    ``truncate_target(size)`` is: a chosen kill point, where the random
    trials only find it now and then.  Returns True when the child was killed,
    False when ``action`` ended (and the image was closed) first."""
    pid = os.fork()
    if pid == 0:                                       # the writer
        code = 0
        try:
            real = os.pwrite

            def pwrite(fd, data, offset):
                if target(offset, bytes(data)):
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(fd, data, offset)
            os.pwrite = pwrite
            if truncate_target is not None:
                real_truncate = os.ftruncate

                def ftruncate(fd, size):
                    if truncate_target(size):
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real_truncate(fd, size)
                os.ftruncate = ftruncate
            from drivebay.block.drivers import open_image
            with open_image(path, writable=True) as image:
                action(image)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status):
        raise RuntimeError(f"the writer failed on its own (status {status:#x})")
    return False


# -- checking ---------------------------------------------------------------------------------------

_parser = []


def img_check(path, repair=False):
    """``drivebay img check [-r all]`` (the CLI's own parser and verb, in this
    process: a process per check would cost more than the trial): (exit code,
    output)."""
    from drivebay.system.cli import build_parser
    if not _parser:
        _parser.append(build_parser())
    args = _parser[0].parse_args(["img", "check", *(["-r", "all"] if repair else []), path])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = args.func(args)
    return code, out.getvalue()


def expected_state(initial, ops, last_flush):
    """(model, zero_ok) after ops[0..last_flush]: the data, and where a zero
    is also right (a discarded byte may read as zero or as before)."""
    model = bytearray(initial)
    zero_ok = bytearray(len(initial))
    for op in ops[:last_flush + 1]:
        kind = op[0]
        if kind == "write":
            model[op[1]:op[1] + op[2]] = op_data(op)
            zero_ok[op[1]:op[1] + op[2]] = bytes(op[2])
        elif kind == "zeroes":
            model[op[1]:op[1] + op[2]] = bytes(op[2])
            zero_ok[op[1]:op[1] + op[2]] = bytes(op[2])
        elif kind == "discard":
            zero_ok[op[1]:op[1] + op[2]] = b"\1" * op[2]
    return model, zero_ok


def verify_data(actual, initial, ops, last_flush):
    """None when ``actual`` holds what it must (see the module docstring), else a message."""
    model, zero_ok = expected_state(initial, ops, last_flush)
    later = [op for op in ops[last_flush + 1:] if op[0] != "flush"]
    later_data = [(op[1], op[1] + op[2], op_data(op) if op[0] == "write" else None)
                  for op in later]
    step = 4096
    for at in range(0, len(actual), step):
        hi = min(at + step, len(actual))
        if _whole_piece_ok(actual, model, zero_ok, later_data, at, hi):
            continue
        for sub in range(at, hi, 512):
            problem = _check_piece(actual, model, zero_ok, later_data, sub, min(sub + 512, hi))
            if problem:
                return problem
    return None


def _whole_piece_ok(actual, model, zero_ok, later_data, lo, hi):
    """[lo, hi) is as the last flush left it, zeros where zeros are right, or
    all of one later request's data."""
    a = actual[lo:hi]
    if a == model[lo:hi]:
        return True
    if a.count(0) == hi - lo and zero_ok.count(0, lo, hi) == 0:
        return True
    return any(s <= lo and hi <= e and a == (d[lo - s:hi - s] if d is not None else bytes(hi - lo))
               for s, e, d in later_data)


def _check_piece(actual, model, zero_ok, later_data, lo, hi):
    if _whole_piece_ok(actual, model, zero_ok, later_data, lo, hi):
        return None
    covering = [(s, e, d) for s, e, d in later_data if s < hi and lo < e]
    for i in range(lo, hi):                       # torn inside the piece: byte by byte
        v = actual[i]
        if v == model[i] or (v == 0 and zero_ok[i]):
            continue
        if any(s <= i < e and (d[i - s] if d is not None else 0) == v for s, e, d in covering):
            continue
        return (f"byte {i} is {v:#04x}; the last flush left {model[i]:#04x}"
                f"{' (or zero)' if zero_ok[i] else ''} and no later request wrote {v:#04x} there")
    return None


# -- trials -------------------------------------------------------------------------------------------

@dataclass
class Trial:
    fmt: str
    host_cache: bool
    seed: int
    mode: str                   # "syscall" or "time"
    kill_at: float              # system call number, or seconds
    killed: bool = False
    last_flush: int = -1
    check_code: int = 0
    check_output: str = ""
    problem: str | None = None

    @property
    def failed(self):
        return self.problem is not None

    def describe(self):
        return (f"{self.fmt} cache={'on' if self.host_cache else 'off'} seed={self.seed} "
                f"{self.mode}={self.kill_at} last_flush={self.last_flush}: {self.problem}")


@dataclass
class Harness:
    folder: str
    fmt: str
    template: str = ""
    initial: bytes = b""
    calls: dict = field(default_factory=dict)     # (seed, host_cache) -> syscalls of a whole run

    def __post_init__(self):
        self.template, self.initial = make_template(self.folder, self.fmt)
        self.work = os.path.join(self.folder, "work", os.path.basename(self.template))
        os.makedirs(os.path.dirname(self.work))

    def _copy_template(self):
        """The work folder as the template folder is (the parent, never written, once)."""
        src, dst = os.path.dirname(self.template), os.path.dirname(self.work)
        for name in os.listdir(src):
            if not name.startswith(PARENT + ".") or not os.path.exists(os.path.join(dst, name)):
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))

    def _fork_writer(self, ops, host_cache, kill_at=0, kill_after=None):
        """Run the writer in a child; returns (killed, last reported flush, syscalls)."""
        self._copy_template()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the writer
            code = 0
            try:
                os.close(r)
                calls = run_writer(self.work, ops, host_cache, w, kill_at)
                os.write(w, struct.pack("<i", -1000 - calls))
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        data = b""
        if kill_after is not None:         # killed after that time, or ended before it
            deadline = time.monotonic() + kill_after
            while (left := deadline - time.monotonic()) > 0 and \
                    select.select([r], [], [], left)[0]:
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                data += chunk
            os.kill(pid, signal.SIGKILL)
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        values = [v for (v,) in struct.iter_unpack("<i", data)]
        flushes = [v for v in values if v >= 0]
        totals = [-1000 - v for v in values if v <= -1000]
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if not killed and (not os.WIFEXITED(status) or os.WEXITSTATUS(status)):
            raise RuntimeError(f"writer failed on its own (status {status:#x})")
        return killed, max(flushes, default=-1), totals[0] if totals else None

    def syscalls(self, seed, host_cache):
        key = (seed, host_cache)
        if key not in self.calls:
            _, _, total = self._fork_writer(workload(seed), host_cache)
            self.calls[key] = total
        return self.calls[key]

    def trial(self, seed, host_cache, rnd):
        from drivebay.block.chain import open_chain
        ops = workload(seed)
        if rnd.random() < 0.8:
            total = self.syscalls(seed, host_cache)
            t = Trial(self.fmt, host_cache, seed, "syscall", rnd.randint(1, total + 1))
            t.killed, t.last_flush, _ = self._fork_writer(ops, host_cache, kill_at=t.kill_at)
        else:
            t = Trial(self.fmt, host_cache, seed, "time", round(rnd.uniform(0, 0.25), 4))
            t.killed, t.last_flush, _ = self._fork_writer(ops, host_cache, kill_after=t.kill_at)
        t.check_code, t.check_output = img_check(self.work)
        if not self._passes(t, t.check_code, t.check_output):
            return t
        try:
            with open_chain(self.work) as chain:
                actual = chain.read(0, chain.size)
        except Exception as e:                       # noqa: BLE001 - reported as the finding
            t.problem = f"the image does not open: {e}"
            return t
        t.problem = verify_data(actual, self.initial, ops, t.last_flush)
        if t.problem is None and self.fmt in REPAIR_BEFORE_WRITING:
            self._repair(t, actual)
        if t.problem is None and self.fmt in QEMU_FORMATS:
            self._qemu_check(t)
        if t.problem is None:
            self._write_after(t, rnd)
        return t

    def _qemu_check(self, t):
        r = subprocess.run(["qemu-img", "check", "-f", QEMU_FORMATS[self.fmt], self.work],
                           capture_output=True, text=True, timeout=60)
        if r.returncode not in (0, 3):
            t.problem = f"qemu-img check: exit {r.returncode}: {(r.stdout + r.stderr).strip()}"

    def _repair(self, t, before):
        """``img check -r all``, as a user restarting a VM on the image would: the
        image comes out clean and reads as it did."""
        from drivebay.block.chain import open_chain
        code, output = img_check(self.work, repair=True)
        if code:
            t.problem = f"img check -r all: exit {code}: {output.strip()}"
            return
        code, output = img_check(self.work)
        if code:
            t.problem = f"img check after img check -r all: exit {code}: {output.strip()}"
            return
        with open_chain(self.work) as chain:
            if chain.read(0, chain.size) != before:
                t.problem = "img check -r all changed the data"

    def _passes(self, t, code, output, when="after the kill"):
        if code in (0, 3):
            return True
        t.problem = f"img check {when}: exit {code}: {output.strip()}"
        return False

    def _write_after(self, t, rnd):
        """The crashed image must take new writes (a VM restarted on it) and stay sound."""
        from drivebay.block.backend import BlockBackend
        offset, length = _span(rnd, DISK_SIZE)
        data = rnd.randbytes(length)
        with BlockBackend.open(self.work) as b:
            b.write(offset, data)
            b.flush()
            out = bytearray(length)
            b.readinto(offset, out)
        if out != data:
            t.problem = "a write after the crash does not read back"
            return
        code, output = img_check(self.work)
        self._passes(t, code, output, "after a write to the crashed image")


def run_trials(fmt, trials, folder, seed=0, cache_modes=(True, False)):
    """``trials`` kills of writers running workloads drawn from a few seeds
    (each seed's whole run is counted once to place the kill points)."""
    rnd = random.Random(f"{fmt}-{seed}")
    harness = Harness(folder, fmt)
    seeds = [rnd.randrange(1 << 30) for _ in range(max(2, trials // 12))]
    results = []
    for i in range(trials):
        host_cache = cache_modes[i % len(cache_modes)]
        results.append(harness.trial(rnd.choice(seeds), host_cache, rnd))
    return results


def summary(results):
    by = {}
    for t in results:
        s = by.setdefault((t.fmt, t.host_cache), {"trials": 0, "killed": 0, "leaks": 0,
                                                   "failures": 0})
        s["trials"] += 1
        s["killed"] += t.killed
        s["leaks"] += t.check_code == 3
        s["failures"] += t.failed
    return by


def main(argv=None):
    ap = argparse.ArgumentParser(description="kill a writer at random points; check the image")
    ap.add_argument("--trials", type=int, default=200, help="trials per format")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=os.environ.get("DRIVEBAY_DISK_TMP", "/var/tmp"))
    args = ap.parse_args(argv)
    failures = 0
    for fmt in args.formats.split(","):
        with tempfile.TemporaryDirectory(prefix="drivebay-crash-", dir=args.dir) as folder:
            t0 = time.monotonic()
            results = run_trials(fmt, args.trials, folder, args.seed)
            for (f, cache), s in summary(results).items():
                print(f"{f:9} cache {'on ' if cache else 'off'}: {s['trials']} trials, "
                      f"{s['killed']} killed mid-run, {s['leaks']} left leaks, "
                      f"{s['failures']} failures  "
                      f"({time.monotonic() - t0:.1f} s)")
            for t in results:
                if t.failed:
                    failures += 1
                    print("  FAIL", t.describe())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
