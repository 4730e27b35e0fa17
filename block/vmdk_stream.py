"""VMDK stream-optimized extents: compressed grains behind markers, tables at the end.

Spec: VMware "Virtual Disk Format 5.0" technical note ("Stream-Optimized
Compressed Sparse Extents").  The on-disk header and markers are declared
in block/vmdk_sparse.py, the driver is block/vmdk.py.

streamOptimized: grains are zlib-compressed, each behind a grain marker
{lba, size}; the GTs, the GD, a footer (a copy of the header with the real
gdOffset) and an end-of-stream marker end the file, and the header says
gdOffset = GD_AT_END.  Images QEMU makes keep the GD in the header area
instead; both are read.  Writing (drivebay's decision; QEMU refuses any
write into an allocated grain with EIO, VirtualBox only appends new
grains): any write is accepted.  A grain changed after it was written is
compressed again and appended; the GT then points at the new copy and
the old one is dead space that ``check`` reports as a leak and
``check(repair=True)`` or ``compact()`` removes by rewriting the stream in
LBA order.  Readers that follow the GD and GTs (QEMU and libvmdk are
tested) read the latest data after every flush; until compacted, a consumer
reading the markers strictly in sequence would see the older copy first.  Partial
grain writes are gathered in memory (up to STREAM_PENDING_BYTES) so a
sequential writer appends each grain once.  The tail metadata is rewritten
at flush() and close().

Crash safety: new grain records, and at flush() the new tables, go where
the records end: over the tables the file holds ("committed": those of the
last flush, or found at open).  So before anything reaches them, a copy of
them is written past the room the records and the next tables can take
(STREAM_AHEAD_BYTES more at least), and never before the end of the file
(a copy a killed writer left may end it); that copy ends the file, and its
footer is the one readers find.  flush() writes the new tables right after
the last record and truncates the file there, which drops the copy: a
process killed at any point leaves the tables of the last flush or the new
ones, and records nothing references, which ``check`` reports as leaks.
Until that truncation a consumer reading the markers in sequence stops at
the zeros between the records and the copy.  Should a stream have lost its
footer all the same (a torn write, another writer), ``check(repair=True)``
rebuilds the tables from the grain markers, which is what they are for.
"""

import array
import os
import zlib

from drivebay.block.bitmap_impl import is_zero
from drivebay.block.driver import SECTOR_SIZE, ImageFile, State
from drivebay.block.vmdk_sparse import (
    COMPRESSION_DEFLATE, COPY_CHUNK, DEFAULT_GTES_PER_GT, EMBEDDED_DESCRIPTOR_SECTORS,
    FLAG_COMPRESSED_GRAINS, FLAG_MARKERS, FLAG_REDUNDANT_GRAIN_TABLE,
    FLAG_VALID_NEW_LINE_DETECTION, GD_AT_END, GRAIN_MARKER, GTE_UNALLOCATED, MARKER, MARKER_EOS, MARKER_FOOTER, MARKER_GD,
    MARKER_GT, SPARSE_EXTENT_HEADER, SparseExtent, _align, _merge, _sectors, _table_bytes,
    _write_embedded, new_header)
from drivebay.errors import CorruptImageError, ImageError
from drivebay.layout import Record

# -- constants -----------------------------------------------------------------------------

DEFAULT_COMPRESSION_LEVEL = 6            # zlib's default, as QEMU's deflate
STREAM_PENDING_BYTES = 4 << 20           # partial grains gathered before compressing
STREAM_CACHE_GRAINS = 16                 # inflated grains kept for reads
# Room left for grain records before the copy of the committed tables, or as much as the
# tables take if more: the copy is written again further on when records reach it, so
# copies cost at most about as much writing as the records do.
STREAM_AHEAD_BYTES = 1 << 20


# -- compressed grains ----------------------------------------------------------------------

def inflate(data, limit, path, what):
    """The grain a compressed grain holds: zlib (as VMware and QEMU write) or raw deflate."""
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise CorruptImageError(f"{path}: {what} does not inflate: {e}") from None
    if d.unconsumed_tail:
        raise CorruptImageError(f"{path}: {what} inflates to more than the "
                                f"{limit}-byte grain")
    if not d.eof:
        raise CorruptImageError(f"{path}: {what} is truncated: its deflate stream does "
                                f"not end")
    return out


# -- per-extent state ----------------------------------------------------------------------

class StreamExtent(SparseExtent):
    """A stream-optimized extent: compressed grains behind markers, tables at the end."""
    compressed = True

    def __init__(self, *args, level=DEFAULT_COMPRESSION_LEVEL, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = {}                # grain -> bytearray: written, not yet compressed
        self.cache = {}                  # grain -> inflated bytes, for reads
        self.level = level
        self.data_end = None             # where the next grain record goes (set on first write)
        self.meta_dirty = False
        # The tables the file holds (see the module docstring): header fields, GD size and
        # GTs, shared with self.gts until a GT changes; a GT is copied before its first change.
        self.committed = None
        self.unshared = set()            # GTs changed since the tables were committed
        self.live = set()                # GTs with entries: what the next tables' size allows for
        self.ahead = None                # where the copy of the committed tables starts, if any

    def _record(self, e, g=None):
        """(lba, size) of the grain marker at sector ``e``, checked."""
        at = e * SECTOR_SIZE
        m = GRAIN_MARKER.unpack(self.file.pread(at, GRAIN_MARKER.size, "VMDK grain marker"))
        lba, size = m.lba, m.size
        what = f"grain marker at offset {at}"
        if g is not None and lba != g * self.gs:
            raise CorruptImageError(f"{self.path}: {what} (grain {g}) gives lba {lba}; "
                                    f"expected {g * self.gs}")
        if not 0 < size <= 2 * self.grain + 1024:
            raise CorruptImageError(f"{self.path}: {what} gives a compressed size of {size} "
                                    f"bytes; expected 1 to {2 * self.grain + 1024}")
        return lba, size

    def _record_sectors(self, e, i, j, errors):
        try:
            _, size = self._record(e, i * self.gtes + j)
        except ImageError as err:
            errors.append(str(err).split(": ", 1)[1])
            return None
        return _sectors(GRAIN_MARKER.size + size)

    def content(self, g):
        """Grain ``g`` inflated (self.grain bytes), or None when it holds no data."""
        if g in self.pending:
            return self.pending[g]
        if g in self.cache:
            return self.cache[g]
        e = self.gte(g)
        if not self.allocated(e):
            return None
        _, size = self._record(e, g)
        at = e * SECTOR_SIZE + GRAIN_MARKER.size
        data = inflate(self.file.pread(at, size, f"VMDK compressed grain {g}"), self.grain,
                       self.path, f"compressed grain {g} (lba {g * self.gs}, at offset "
                       f"{e * SECTOR_SIZE})")
        if len(data) < self.grain:
            data += bytes(self.grain - len(data))
        if len(self.cache) >= STREAM_CACHE_GRAINS:
            del self.cache[next(iter(self.cache))]
        self.cache[g] = data
        return data

    def status(self, lo, hi):
        out = [(a, z, s, None) for a, z, s, _ in super().status(lo, hi)]
        if not any(lo // self.grain <= g <= (hi - 1) // self.grain for g in self.pending):
            return _merge(out)
        split = []
        for a, z, s, _ in out:
            for g, ga, gz in self._grains(a, z):
                split.append((ga, gz, State.DATA if g in self.pending else s, None))
        return _merge(split)

    def read(self, lo, view):
        for g, a, z in self._grains(lo, lo + len(view)):
            data = self.content(g)
            part = view[a - lo:z - lo]
            if data is None:
                part[:] = bytes(z - a)
            else:
                part[:] = memoryview(data)[a - g * self.grain:z - g * self.grain]

    def _prepare(self):
        """Before the first change: every GT in memory (the tables at the end of
        the file are about to be overwritten) and where grain records end."""
        if self.data_end is not None:
            return
        last = 0
        for i in range(self.gdes):
            gt = self.gt(i)
            if gt is not None:
                last = max(last, max(gt))
        hdr = self.hdr
        end = max(hdr.overHead, hdr.descriptorOffset + hdr.descriptorSize, 1) * SECTOR_SIZE
        if self.allocated(last):
            _, size = self._record(last)
            end = max(end, _align(last * SECTOR_SIZE + GRAIN_MARKER.size + size, SECTOR_SIZE))
        self.data_end = end
        self._committed_now()

    def _committed_now(self):
        """The tables in memory are those the file holds."""
        self.committed = (Record(self.hdr), dict(self.gts), self.gdes)
        self.unshared = set()
        self.live = {i for i, gt in self.gts.items() if gt is not None and any(gt)}
        self.ahead = None

    def _tail_bound(self):
        """Bytes the next tables take at most: a marker and a GT for each GT with
        entries, the GD marker and GD, the footer marker and footer, end of stream."""
        return (len(self.live) * (1 + self.gt_sectors) + 1 + _sectors(4 * self.gdes) + 3) * \
            SECTOR_SIZE

    def _keep_committed_ahead(self, end):
        """Grain records are about to reach byte ``end``: the committed tables must
        lie past where the next tables could end; if they do not, a copy of them
        goes further on, ending the file."""
        need = end + self._tail_bound()
        if self.ahead is not None and need <= self.ahead:
            return
        hdr, gts, gdes = self.committed
        # At the end of the file at least: a copy a dead writer left may end it, and
        # its footer is the one in use until this copy replaces it as the file's end.
        at = _align(max(need + max(STREAM_AHEAD_BYTES, self._tail_bound()), self.file.size()),
                    SECTOR_SIZE)
        tail, _, _ = stream_tail(hdr, gts, gdes, at)
        self.file.pwrite(at, tail, "VMDK stream tables (the committed ones, past the grains)")
        self.ahead = at
        self.file_end = max(self.file_end, at + len(tail))

    def write(self, lo, view, below, differencing):
        self._prepare()
        for g, a, z in self._grains(lo, lo + len(view)):
            part = view[a - lo:z - lo]
            if self._whole(g, a, z):
                self.pending.pop(g, None)
                self._put(g, part, differencing)
                continue
            buf = self.pending.get(g)
            if buf is None:
                data = self.content(g)
                buf = bytearray(data) if data is not None else \
                    self._fresh(g, self.gte(g), below)
                self.pending[g] = buf
            buf[a - g * self.grain:z - g * self.grain] = part
            self.cache.pop(g, None)
        while len(self.pending) * self.grain > STREAM_PENDING_BYTES:
            g = next(iter(self.pending))
            self._put(g, self.pending.pop(g), differencing)

    def write_zeroes(self, lo, n, below, differencing):
        zeros = bytes(min(n, COPY_CHUNK))
        for a, z in self._to_zero(lo, lo + n, differencing):
            for at in range(a, z, COPY_CHUNK):
                m = min(COPY_CHUNK, z - at)
                self.write(at, memoryview(zeros)[:m], below, differencing)

    def discard(self, lo, n):
        """Grain records cannot be freed in place: the hint does nothing."""

    def _put(self, g, data, differencing):
        """Compress grain ``g`` and append its record (or reuse the last record's
        place when it is this grain's old copy)."""
        self.cache.pop(g, None)
        visible = min(self.grain, self.length - g * self.grain)
        old = self.gte(g)
        if is_zero(data) and not differencing:
            if old != GTE_UNALLOCATED:
                self.set_gte_memory(g, GTE_UNALLOCATED)
            return
        packed = zlib.compress(bytes(memoryview(data)[:visible]), self.level)
        record = bytearray(GRAIN_MARKER.pack({"lba": g * self.gs, "size": len(packed)}))
        record += packed
        record += bytes(_align(len(record), SECTOR_SIZE) - len(record))
        at = self.data_end
        if self.allocated(old):
            _, size = self._record(old)
            if _align(old * SECTOR_SIZE + GRAIN_MARKER.size + size, SECTOR_SIZE) == at:
                at = old * SECTOR_SIZE
        self._keep_committed_ahead(at + len(record))
        self.file.pwrite(at, record, "VMDK compressed grain")
        self.data_end = at + len(record)
        self.file_end = max(self.file_end, self.data_end)
        self.set_gte_memory(g, at // SECTOR_SIZE)

    def grow(self, room):
        """Only the capacity and the GD change; the tail is rewritten at flush."""
        self._prepare()
        self._grow_tables(room)
        self.meta_dirty = True

    def set_gte_memory(self, g, e):
        """Stream GTs are written with the footer: only memory changes now."""
        i, j = divmod(g, self.gtes)
        gt = self.gts.get(i)
        if gt is None:
            gt = self.gts[i] = array.array("I", bytes(4 * self.gtes))
        elif i not in self.unshared and self.committed is not None and i in self.committed[1]:
            self.committed[1][i] = array.array("I", gt)
        self.unshared.add(i)
        if e:
            self.live.add(i)
        gt[j] = e
        self.meta_dirty = True

    def flush(self):
        """Compress pending grains, then write GTs, GD, footer and end-of-stream."""
        self.flush_pending()
        if self.meta_dirty:
            # The new tables go where grain records end: over the committed ones
            # when no record was written since, so those are copied away first.
            self._keep_committed_ahead(self.data_end)
            self._installed(*self.write_tail(self.file, self.data_end, self.gts))

    def flush_pending(self):
        if self.pending:
            self._prepare()
            for g in list(self.pending):
                self._put(g, self.pending.pop(g), self._differencing)

    _differencing = False                # set by the image (a stream child copies up)

    def write_tail(self, f, at, gts):
        """At byte ``at`` of ``f`` (where grain records end): the tables, the
        footer and the end-of-stream marker; then the header at sector 0 says
        GD_AT_END.  Returns what ``_installed`` takes."""
        tail, gd, footer = stream_tail(self.hdr, gts, self.gdes, at)
        f.pwrite(at, tail, "VMDK stream tables and footer")
        f.truncate(at + len(tail))
        f.pwrite(0, SPARSE_EXTENT_HEADER.pack(dict(footer, gdOffset=GD_AT_END)),
                 "VMDK sparse extent header")
        return gts, gd, footer, at, at + len(tail)

    def _installed(self, gts, gd, footer, data_end, file_end):
        """The tables just written are the extent's from now on."""
        self.gts, self.gd, self.rgd = gts, gd, None
        self.hdr.update(footer)
        self.data_end, self.file_end = data_end, file_end
        self.meta_dirty, self.problems = False, []
        self._committed_now()

    # -- check and rewrite -----------------------------------------------------------------

    def scan(self):
        """Grain records found by walking the markers: [(sector, lba, sectors)]."""
        records = []
        sector = max(self.hdr.overHead, 1)
        limit = _sectors(self.file.size())
        while sector < limit:
            m = MARKER.unpack(self.file.pread(sector * SECTOR_SIZE, SECTOR_SIZE, "VMDK marker"))
            if m.size:
                n = _sectors(GRAIN_MARKER.size + m.size)
                if sector + n > limit or m.size > 2 * self.grain + 1024:
                    break                                # a torn last record
                records.append((sector, m.val, n))
                sector += n
            elif m.type in (MARKER_GT, MARKER_GD, MARKER_FOOTER) and m.val < limit:
                sector += 1 + m.val
            else:
                break                                    # end of stream (or zero padding)
        return records

    def _survey_leaks(self, report, regions, sectors, end, leaked, fixes):
        if self.problems:
            fixes.append(("rebuild",))
            return
        live = {s for s, _, what in regions if what.startswith("grain ")}
        records = self.scan()
        dead = [(s, n) for s, _, n in records if s not in live]
        if dead:
            report.leaks.append(f"{len(dead)} superseded grain record(s), "
                                f"{sum(n for _, n in dead) * SECTOR_SIZE} bytes, in "
                                f"{self.file.path} (compact rewrites the stream)")
        # A writer killed with a copy of the tables ending the file (see the module
        # docstring) leaves space between the last record and those tables.
        records_end = max([s + n for s, _, n in records] + [max(self.hdr.overHead, 1)])
        tables = min([self.hdr.gdOffset] + [e for e in self.gd if e]) - 1      # a marker first
        if tables > records_end:
            report.leaks.append(f"{(tables - records_end) * SECTOR_SIZE} bytes between the "
                                f"grain records and the tables of {self.file.path} belong to "
                                f"nothing (compact rewrites the stream)")
        if dead or tables > records_end:
            fixes.append(("rewrite",))

    def repair(self, fixes, report):
        for fix in fixes:
            if fix[0] == "rebuild":
                found = {}
                for sector, lba, _ in self.scan():
                    if lba % self.gs == 0 and lba // self.gs < self.grains:
                        found[lba // self.gs] = sector          # the later copy wins
                gts = {}
                for g, sector in found.items():
                    i, j = divmod(g, self.gtes)
                    gts.setdefault(i, array.array("I", bytes(4 * self.gtes)))[j] = sector
                self.rewrite(gts)
                report.repaired.append(f"rebuilt the grain tables of {self.file.path} from "
                                       f"{len(found)} grain markers and rewrote the stream")
            elif fix[0] == "rewrite":
                self.rewrite()
                report.repaired.append(f"rewrote {self.file.path} without superseded grains")

    def rewrite(self, gts=None):
        """Copy the live grain records in LBA order into a new file, add the
        tables, and rename it over the old one: the old file stays whole until
        the new one is complete.  Returns the old ImageFile (closed): the image
        holding it takes ``self.file`` instead."""
        self.flush_pending()
        if gts is None:
            gts = {i: self.gts.get(i) or self.gt(i) for i in range(self.gdes) if
                   i in self.gts or self.gd[i]}
        f, tmp = self.file, self.file.path + ".drivebay-rewrite"
        out = ImageFile(tmp, writable=True, create=True)
        try:
            at = max(self.hdr.overHead, 1) * SECTOR_SIZE
            out.pwrite(0, f.pread(0, at, "VMDK header and descriptor"))
            moved = {}
            for i, gt in sorted(gts.items()):
                moved[i] = new = array.array("I", gt)
                for j, e in enumerate(gt):
                    if not self.allocated(e):
                        continue
                    _, size = self._record(e, i * self.gtes + j)
                    record = f.pread(e * SECTOR_SIZE, GRAIN_MARKER.size + size, "VMDK grain")
                    n = _align(len(record), SECTOR_SIZE)
                    out.pwrite(at, record + bytes(n - len(record)), "VMDK grain")
                    new[j] = at // SECTOR_SIZE
                    at += n
            done = self.write_tail(out, at, moved)
            out.sync()
        except BaseException:
            out.close()
            os.unlink(tmp)
            raise
        out.close()
        try:
            os.replace(tmp, f.path)
        except OSError as e:
            os.unlink(tmp)
            raise ImageError(f"{f.path}: replacing the file with its rewrite: "
                             f"{e.strerror}") from None
        self.file = ImageFile(f.path, writable=True)   # locks the new file like the old
        if getattr(f, "direct", None) is not None:      # the host cache was off (O_DIRECT)
            self.file.set_host_cache(False)
        f.close()
        self._installed(*done)
        self.cache.clear()
        return f


# -- creation ------------------------------------------------------------------------------

def stream_tail(hdr, gts, gdes, at):
    """The end of a stream written at byte ``at``: a GT marker and GT for every
    table with an entry, the GD marker and GD, the footer marker and footer,
    the end-of-stream marker.  Returns (bytes, GD, footer)."""
    gtes = hdr.numGTEsPerGT
    gt_sectors, gd_sectors = _sectors(4 * gtes), _sectors(4 * gdes)
    tail = bytearray()
    gd = array.array("I", bytes(4 * gdes))
    for i in range(gdes):
        gt = gts.get(i)
        if gt is None or not any(gt):
            continue
        tail += MARKER.pack(MARKER.defaults(val=gt_sectors, type=MARKER_GT))
        gd[i] = (at + len(tail)) // SECTOR_SIZE
        tail += _table_bytes(gt) + bytes(gt_sectors * SECTOR_SIZE - 4 * gtes)
    tail += MARKER.pack(MARKER.defaults(val=gd_sectors, type=MARKER_GD))
    footer = dict(hdr, gdOffset=(at + len(tail)) // SECTOR_SIZE, rgdOffset=0,
                  flags=hdr.flags & ~FLAG_REDUNDANT_GRAIN_TABLE)
    tail += _table_bytes(gd) + bytes(gd_sectors * SECTOR_SIZE - 4 * gdes)
    tail += MARKER.pack(MARKER.defaults(val=1, type=MARKER_FOOTER))
    tail += SPARSE_EXTENT_HEADER.pack(footer)
    tail += MARKER.pack(MARKER.defaults(val=0, type=MARKER_EOS))
    return tail, gd, footer


def write_stream_extent(f, capacity, grain_sectors, descriptor_text):
    """A new, empty stream-optimized extent: header, descriptor, GD, footer, EOS."""
    desc_sectors = EMBEDDED_DESCRIPTOR_SECTORS
    overhead = _align(1 + desc_sectors, grain_sectors)
    hdr = new_header(capacity, grain_sectors, 1, desc_sectors, 0, GD_AT_END, overhead,
                     FLAG_VALID_NEW_LINE_DETECTION | FLAG_COMPRESSED_GRAINS | FLAG_MARKERS, 3,
                     COMPRESSION_DEFLATE)
    _write_embedded(f, f.path, 1, desc_sectors, descriptor_text)
    gdes = -(-(-(-capacity // grain_sectors)) // DEFAULT_GTES_PER_GT)
    tail, _, _ = stream_tail(hdr, {}, gdes, overhead * SECTOR_SIZE)
    f.pwrite(overhead * SECTOR_SIZE, tail, "VMDK stream tables and footer")
    f.pwrite(0, SPARSE_EXTENT_HEADER.pack(hdr), "VMDK sparse extent header")


