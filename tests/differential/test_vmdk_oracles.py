"""VMDK against qemu-img/qemu-io and libvmdk, in both directions.

Recorded with qemu-img 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3) and
libvmdk-python 20260714 (module pyvmdk).

* qemu-img creates all five hosted subformats (``-o subformat=``); images
  it makes and qemu-io writes read here byte for byte as ``qemu-img
  convert -O raw`` reads them, with the zeroed-grain option too.  QEMU
  writes a streamOptimized image only in whole grains, each once (EIO or
  EINVAL otherwise), and keeps its tables in the header area (no footer).
* Images drivebay writes, of every variant, pass ``qemu-img check -f vmdk``
  (exit 0) and compare equal (``qemu-img compare -f vmdk -F raw``) with a
  raw file given the same writes; a stream drivebay wrote (partial,
  repeated and zero writes, its tables and footer at the end) reads back in
  QEMU grain for grain, and so does a QEMU stream drivebay added grains to.
* Differencing: children qemu-img makes with ``-b base.vmdk -F vmdk`` read
  here (through open_chain, parentFileNameHint) as QEMU reads them; children
  drivebay makes read in QEMU (it checks parentCID against the parent's CID).
* libvmdk reads drivebay's images of every variant identically, children
  with ``set_parent``.  libvmdk 20260714 ignores the zeroed-grain GTE (it
  reads sector 1) and cannot open ZERO extents or absolute extent paths, so
  it is not asked about zeroed-grain images or raw-disk descriptors.
"""

import argparse
import os
import random

import pytest
import pyvmdk

from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.vmdk import VmdkDriver
from drivebay.system import img

from qemu_tools import qemu_info, run

MiB = 1 << 20
GRAIN = 64 * 1024
SUBFORMATS = {"monolithicSparse": "dynamic", "monolithicFlat": "fixed",
              "twoGbMaxExtentSparse": "split2g", "twoGbMaxExtentFlat": "split2g-fixed",
              "streamOptimized": "stream"}


def qemu_raw(path, tmp_path):
    out = str(tmp_path / "qemu-view.raw")
    if os.path.exists(out):
        os.unlink(out)
    run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()


def qemu_io(path, commands):
    args = []
    for c in commands:
        args += ["-c", c]
    run("qemu-io", "-f", "vmdk", *args, path)


def random_ops(rnd, size, count=30):
    """Writes (some unaligned, some zero) across the disk."""
    for _ in range(count):
        offset = rnd.randrange(size)
        n = min(rnd.choice([1, 511, 4096, GRAIN, 70000, 300_000]), size - offset)
        if rnd.random() < 0.4:
            offset -= offset % 512
            n = min(max(512, n - n % 512), size - offset)
        kind = rnd.choice(["data", "data", "data", "zero", "write_zeroes"])
        yield kind, offset, n, rnd.randbytes(n) if kind == "data" else bytes(n)


def apply(target, model, ops):
    for kind, offset, n, data in ops:
        if kind == "write_zeroes":
            target.write_zeroes(offset, n)
        else:
            target.write(offset, data)
        model[offset:offset + n] = data


def qemu_accepts(path, model, tmp_path):
    twin = tmp_path / "twin.raw"
    twin.write_bytes(model)
    run("qemu-img", "check", "-f", "vmdk", path)
    r = run("qemu-img", "compare", "-f", "vmdk", "-F", "raw", path, twin, ok=(0, 1))
    assert r.returncode == 0, r.stdout
    assert qemu_info(path, "vmdk")["virtual-size"] == len(model)


def drivebay_img(*argv):
    """``drivebay img ...`` as the CLI parses and runs it."""
    parser = argparse.ArgumentParser(prog="drivebay")
    img.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["img", *map(str, argv)])
    return args.func(args)


def libvmdk_read(path, parent=None):
    h = pyvmdk.handle()
    h.open(str(path))
    h.open_extent_data_files()
    if parent is not None:
        p = pyvmdk.handle()
        p.open(str(parent))
        p.open_extent_data_files()
        h.set_parent(p)
    try:
        return h.read_buffer_at_offset(h.media_size, 0)
    finally:
        h.close()


# -- images QEMU makes, read here ----------------------------------------------------------

@pytest.mark.parametrize("subformat", list(SUBFORMATS))
def test_qemu_images_read_here(tmp_path, subformat):
    path = str(tmp_path / "q.vmdk")
    size = 6 * MiB + 3 * 512
    run("qemu-img", "create", "-f", "vmdk", "-o", f"subformat={subformat}", path, str(size))
    rnd = random.Random(subformat)
    if subformat == "streamOptimized":
        # QEMU takes only whole, new grains in a stream, in ascending order
        grains = sorted(rnd.sample(range(size // GRAIN), 20))
        cmds = [f"write -P {rnd.randrange(1, 256)} {g * GRAIN} {GRAIN}" for g in grains]
    else:
        cmds = []
        for _ in range(25):
            offset = rnd.randrange(size - 70000)
            n = rnd.choice([1, 700, 4096, 70000])
            z = rnd.random() < 0.25 and offset % 512 == 0
            cmds.append(f"write {'-z' if z else f'-P {rnd.randrange(256)}'} {offset} {n}")
    qemu_io(path, cmds)
    expect = qemu_raw(path, tmp_path)
    with open_image(path) as im:
        assert im.variant == subformat
        assert im.size == qemu_info(path, "vmdk")["virtual-size"] == len(expect)
        assert im.read(0, im.size) == expect
        assert not im.check().errors
    assert libvmdk_read(path) == expect


def test_qemu_zeroed_grain_image_reads_here(tmp_path):
    base, child = str(tmp_path / "b.vmdk"), str(tmp_path / "c.vmdk")
    run("qemu-img", "create", "-f", "vmdk", base, "2M")
    qemu_io(base, ["write -P 7 0 2M"])
    run("qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "b.vmdk", "-F", "vmdk",
        child)
    qemu_io(child, [f"write -z {GRAIN} {3 * GRAIN}", "write -P 9 100 50"])
    expect = qemu_raw(child, tmp_path)
    with open_chain(child) as ch:
        assert ch.read(0, ch.size) == expect
        assert ch.top.info()["zeroed_grain_gte"]
    assert expect[GRAIN:4 * GRAIN] == bytes(3 * GRAIN)


# -- images drivebay makes, read by QEMU and libvmdk ---------------------------------------

@pytest.mark.parametrize("variant", list(SUBFORMATS.values()))
def test_our_images_pass_qemu_check_and_compare(tmp_path, variant):
    path = tmp_path / "ours.vmdk"
    size = 5 * MiB + 7 * 512
    VmdkDriver.create(path, size, variant=variant)
    rnd = random.Random(variant)
    model = bytearray(size)
    with open_image(path, writable=True) as im:
        apply(im, model, random_ops(rnd, size))
    with open_image(path, writable=True) as im:          # a second session
        apply(im, model, random_ops(rnd, size, 10))
    qemu_accepts(path, model, tmp_path)
    assert libvmdk_read(path) == model


def test_stream_written_here_reads_in_qemu_grain_for_grain(tmp_path):
    path = tmp_path / "stream.vmdk"
    size = 4 * MiB
    VmdkDriver.create(path, size, variant="stream")
    rnd = random.Random(5)
    model = bytearray(size)
    with open_image(path, writable=True) as im:
        for at in range(0, 2 * MiB, 3000):               # a sequential, unaligned writer
            chunk = rnd.randbytes(min(3000, 2 * MiB - at))
            im.write(at, chunk)
            model[at:at + len(chunk)] = chunk
        im.flush()
        apply(im, model, random_ops(rnd, size, 25))      # then anything, over old grains too
    got = qemu_raw(path, tmp_path)
    bad = [g for g in range(size // GRAIN)
           if got[g * GRAIN:(g + 1) * GRAIN] != model[g * GRAIN:(g + 1) * GRAIN]]
    assert bad == []
    qemu_accepts(path, model, tmp_path)
    with open_image(path, writable=True) as im:
        im.compact()
    assert qemu_raw(path, tmp_path) == model
    assert libvmdk_read(path) == model


def test_qemu_stream_extended_here(tmp_path):
    path = str(tmp_path / "q.vmdk")
    run("qemu-img", "create", "-f", "vmdk", "-o", "subformat=streamOptimized", path, "2M")
    qemu_io(path, [f"write -P 3 0 {GRAIN}", f"write -P 4 {4 * GRAIN} {GRAIN}"])
    model = bytearray(qemu_raw(path, tmp_path))
    with open_image(path, writable=True) as im:
        apply(im, model, [("data", 100, 5, b"drive"), ("data", 10 * GRAIN, 3, b"bay")])
    qemu_accepts(path, model, tmp_path)


def test_cli_convert_to_each_variant(tmp_path):
    src = tmp_path / "src.raw"
    rnd = random.Random(9)
    data = bytearray(3 * MiB)
    data[GRAIN:5 * GRAIN] = rnd.randbytes(4 * GRAIN)
    data[2 * MiB:2 * MiB + 1000] = b"z" * 1000
    src.write_bytes(data)
    for variant in SUBFORMATS.values():
        out = tmp_path / f"out-{variant}.vmdk"
        assert drivebay_img("convert", "-f", "raw", "-O", "vmdk", "--variant", variant,
                            src, out) == 0
        r = run("qemu-img", "compare", "-f", "raw", "-F", "vmdk", src, out, ok=(0, 1))
        assert r.returncode == 0, (variant, r.stdout)


# -- differencing --------------------------------------------------------------------------

def test_qemu_children_read_here(tmp_path):
    base, mid, top = (str(tmp_path / n) for n in ("base.vmdk", "mid.vmdk", "top.vmdk"))
    run("qemu-img", "create", "-f", "vmdk", base, "4M")
    qemu_io(base, ["write -P 1 0 3M"])
    run("qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", mid)
    qemu_io(mid, ["write -P 2 1000 5000", "write -z 1M 128k"])
    run("qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
        "-b", "mid.vmdk", "-F", "vmdk", top)
    qemu_io(top, ["write -P 3 3000 100", "write -P 4 3145728 70000"])
    expect = qemu_raw(top, tmp_path)
    with open_chain(top) as ch:
        assert len(ch.images) == 3
        assert ch.read(0, ch.size) == expect
    with open_chain(top, writable=True) as ch:            # drivebay writes into QEMU's child
        ch.write(5, b"drivebay")
    model = bytearray(expect)
    model[5:13] = b"drivebay"
    qemu_accepts(top, model, tmp_path)


def test_our_children_read_in_qemu_and_libvmdk(tmp_path):
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    size = 4 * MiB
    VmdkDriver.create(base, size, variant="split2g")
    rnd = random.Random(3)
    model = bytearray(size)
    with open_image(base, writable=True) as im:
        apply(im, model, random_ops(rnd, size, 10))
    with open_image(base) as parent:
        VmdkDriver.create(child, None, parent=parent)
    with open_chain(child, writable=True) as ch:
        apply(ch, model, random_ops(rnd, size, 25))
    qemu_accepts(child, model, tmp_path)
    assert qemu_info(child, "vmdk")["backing-filename"] == "base.vmdk"
    assert libvmdk_read(child, parent=base) == model
