"""VHD against qemu-img and libvhdi, in both directions.

Recorded with qemu-img 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3) and
libvhdi-python 20260901 (module pyvhdi).

* qemu-img reads and writes fixed and dynamic VHDs ("vpc"), has no check
  for them and ignores a differencing image's parent.  Images drivebay
  writes compare equal (`qemu-img compare -f vpc -F raw`) with a raw file
  given the same operations, and `qemu-img info -f vpc` reports the size
  drivebay keeps (drivebay's creator field makes qemu-img read CurrentSize
  rather than the CHS geometry).
* Images qemu-img makes (`create -o subformat=dynamic|fixed`, with and
  without `force_size=on`, written by qemu-io; `convert -O vpc` from a raw
  file) read here byte for byte with the size qemu-img info reports.
* libvhdi reads drivebay's fixed, dynamic and differencing images
  identically (the parent given with `set_parent`).  Two libvhdi 20260901
  bugs shape those tests (drivebay, qemu-img and the spec agree on the
  images): with a block size other than 2 MiB (or 4 KiB), a read crossing
  from a block whose last sectors' bits are 0 into the next block returns
  zeros for that whole next block; and in a differencing image, a parent
  sector that follows a child sector in the same bitmap byte (8 sectors)
  reads as zeros.  So libvhdi gets 2 MiB blocks and, for differencing
  images, 4 KiB-aligned writes.
"""

import os
import random

import pyvhdi
import pytest

from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.vhd import VhdDriver

from qemu_tools import qemu_info as _qemu_info, run

MiB = 1 << 20


def qemu_size(path):
    return _qemu_info(path, "vpc")["virtual-size"]


def qemu_raw(path, tmp_path):
    out = str(tmp_path / "qemu-view.raw")
    run("qemu-img", "convert", "-f", "vpc", "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()


def random_ops(rnd, size, count=40):
    """Writes (some unaligned, some zero) across the disk."""
    for _ in range(count):
        offset = rnd.randrange(size)
        n = min(rnd.choice([1, 511, 512, 4096, 70000, 3 * MiB]), size - offset)
        if rnd.random() < 0.5:
            offset, n = offset - offset % 512, max(512, n - n % 512)
            n = min(n, size - offset)
        kind = rnd.choice(["data", "data", "data", "zero", "write_zeroes"])
        yield kind, offset, n, rnd.randbytes(n) if kind == "data" else bytes(n)


def apply(image, raw, ops):
    for kind, offset, n, data in ops:
        if kind == "write_zeroes":
            image.write_zeroes(offset, n)
        else:
            image.write(offset, data)
        raw.seek(offset)
        raw.write(data)


# -- qemu-img reads what drivebay writes -------------------------------------------------

@pytest.mark.parametrize("variant,block",
                         [("dynamic", 2 * MiB), ("dynamic", 64 << 10), ("fixed", None)])
def test_qemu_reads_what_we_write(tmp_path, variant, block):
    size = 10 * MiB + 7 * 512                       # not a CHS size
    vhd, raw = str(tmp_path / "ours.vhd"), str(tmp_path / "twin.raw")
    VhdDriver.create(vhd, size, variant=variant, **({"block_size": block} if block else {}))
    rnd = random.Random(f"{variant}{block}")
    with open(raw, "wb") as r:
        r.truncate(size)
    with open_image(vhd, writable=True) as image, open(raw, "r+b") as r:
        apply(image, r, random_ops(rnd, size))
        image.resize(size + 3 * MiB)
        r.truncate(size + 3 * MiB)
        apply(image, r, random_ops(rnd, size + 3 * MiB, 10))
    assert qemu_size(vhd) == size + 3 * MiB
    run("qemu-img", "compare", "-f", "vpc", "-F", "raw", vhd, raw)


# -- drivebay reads what qemu-img writes -------------------------------------------------

@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
@pytest.mark.parametrize("force_size", [False, True])
def test_we_read_what_qemu_writes(tmp_path, subformat, force_size):
    vhd = str(tmp_path / "qemu.vhd")
    opts = f"subformat={subformat}" + (",force_size=on" if force_size else "")
    run("qemu-img", "create", "-q", "-f", "vpc", "-o", opts, vhd, "10M")
    run("qemu-io", "-f", "vpc", "-c", "write -P 0x33 1M 64k", vhd)
    size = qemu_size(vhd)
    assert (size == 10 * MiB) == force_size     # 10 MiB is no CHS size: qemu-img rounds it up
    with open_image(vhd) as image:
        assert image.size == size
        data = image.read(0, size)
        assert image.check().clean
    assert data == bytes(MiB) + b"\x33" * 65536 + bytes(size - MiB - 65536)
    assert data == qemu_raw(vhd, tmp_path)


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_we_read_qemu_convert_and_qemu_reads_our_changes(tmp_path, subformat):
    raw, vhd = str(tmp_path / "src.raw"), str(tmp_path / "conv.vhd")
    rnd = random.Random(subformat)
    content = bytearray(5 * MiB)
    for _ in range(12):                                # data islands between holes
        at, n = rnd.randrange(5 * MiB), rnd.randrange(1, 300000)
        content[at:at + n] = rnd.randbytes(len(content[at:at + n]))
    with open(raw, "wb") as f:
        f.write(content)
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", f"subformat={subformat}", raw, vhd)
    size = qemu_size(vhd)
    with open_image(vhd) as image:
        assert image.size == size >= len(content)
        assert image.read(0, size) == content + bytes(size - len(content))
    # Then drivebay writes into qemu-img's image, and qemu-img reads the result.
    with open(raw, "r+b") as r:
        r.truncate(size)
        with open_image(vhd, writable=True) as image:
            apply(image, r, random_ops(rnd, size, 20))
    run("qemu-img", "compare", "-f", "vpc", "-F", "raw", vhd, raw)


# -- libvhdi reads what drivebay writes -------------------------------------------------

def libvhdi_read(path, parent=None):
    f = pyvhdi.file()
    f.open(path)
    if parent is not None:
        f.set_parent(parent)
    return f, f.read_buffer_at_offset(f.get_media_size(), 0)


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_libvhdi_reads_ours(tmp_path, variant):
    vhd = str(tmp_path / "ours.vhd")
    size = 6 * MiB + 512
    VhdDriver.create(vhd, size, variant=variant)
    rnd = random.Random(variant)
    with open_image(vhd, writable=True) as image, open(os.devnull, "wb") as sink:
        apply(image, sink, random_ops(rnd, size))
    with open_image(vhd) as image:
        ours, uuid = image.read(0, size), image.uuid
    f, theirs = libvhdi_read(vhd)
    assert (f.get_media_size(), f.get_disk_type(), f.get_identifier()) == \
        (size, 2 if variant == "fixed" else 3, str(uuid))
    assert theirs == ours
    f.close()


def test_libvhdi_reads_our_differencing_chain(tmp_path):
    base, child = str(tmp_path / "base.vhd"), str(tmp_path / "child.vhd")
    size = 6 * MiB
    VhdDriver.create(base, size)
    rnd = random.Random("chain")
    with open_image(base, writable=True) as parent:
        parent.write(0, rnd.randbytes(size))
    with open_image(base) as parent:
        VhdDriver.create(child, None, parent=parent)
    # 4 KiB-aligned writes: whole bitmap bytes (see the module docstring).
    with open_chain(child, writable=True) as chain:
        for _ in range(30):
            at = rnd.randrange(size // 4096) * 4096
            n = min(rnd.randrange(1, 40) * 4096, size - at)
            kind = rnd.choice(["data", "zero", "write_zeroes"])
            if kind == "write_zeroes":
                chain.write_zeroes(at, n)
            else:
                chain.write(at, rnd.randbytes(n) if kind == "data" else bytes(n))
        ours, parent_uuid = chain.read(0, size), chain.images[1].uuid
    p, _ = libvhdi_read(base)
    c, theirs = libvhdi_read(child, parent=p)
    assert c.get_disk_type() == 4 and c.get_parent_identifier() == str(parent_uuid)
    assert c.get_parent_filename() == "base.vhd"
    assert theirs == ours
    c.close()
    p.close()
