"""CD/DVD images from host files: an ISO 9660 writer with Joliet and Rock Ridge names.

Specs: ECMA-119 4th edition (ISO 9660), the Joliet specification (Microsoft,
1995: a supplementary volume descriptor with UCS-2 names, escape sequence
``%/E`` = level 3), SUSP 1.12 (IEEE P1281: SP, CE, ER entries) and RRIP
1.09 (IEEE P1282, "RRIP_1991A": PX, NM, TF entries).  pycdlib (LGPL-2.1)
would do this too; it is not a permissive licence, so drivebay writes its
own, small, writer-only implementation.

The image, in logical blocks of 2048 bytes:

    0-15      system area (zeros)
    16        primary volume descriptor (level 1 names: 8.3, upper case, ";1")
    17        Joliet supplementary volume descriptor (names up to 64 UCS-2 units)
    18        volume descriptor set terminator
    ...       path tables (L and M, primary then Joliet), Rock Ridge
              continuation areas, primary directories, Joliet directories,
              file data (each file once; both trees point at it)

The Rock Ridge names carry the full POSIX names (NM), modes (PX) and
modification times (TF) in the primary tree; Joliet names what Windows
shows.  ``write_viso``/``read_viso`` handle VirtualBox's VISO files (a text
file of ``/path/in/iso=/host/path`` lines that VirtualBox turns into an ISO
on the fly); ``build_iso_from_viso`` makes the real ISO from one.

Not supported: files of 4 GiB or more (multi-extent files), directories
deeper than ECMA-119's 8 levels (Rock Ridge relocation), El Torito boot
records, UDF, symbolic links (followed as the files they point to).
"""

import datetime
import os
import shlex
import stat
import struct
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.errors import ImageError

BLOCK = 2048
SYSTEM_AREA_BLOCKS = 16
MAX_DEPTH = 8                       # ECMA-119 6.8.2.1: at most eight levels of directories
MAX_FILE_SIZE = (1 << 32) - 1       # a directory record's Data Length is a 32-bit number
MAX_RECORD = 255                    # Length of Directory Record is one byte
JOLIET_NAME_MAX = 64                # Joliet: identifiers up to 64 UCS-2 characters
VOLUME_ID_MAX = 32
JOLIET_ESCAPE = b"%/E"              # UCS-2 level 3
D_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
RRIP_ID = b"RRIP_1991A"
RRIP_DES = (b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM "
            b"SEMANTICS")
RRIP_SRC = (b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER "
            b"IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.")
CE_LEN = 28
FLAG_DIRECTORY = 0x02
VISO_MARKER = "--iprt-iso-maker-file-marker-bourne-sh"


def both16(v):
    return struct.pack("<H", v) + struct.pack(">H", v)


def both32(v):
    return struct.pack("<I", v) + struct.pack(">I", v)


def _record_time(t):
    """ECMA-119 9.1.5: seven bytes, years since 1900, GMT offset 0."""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return bytes([d.year - 1900, d.month, d.day, d.hour, d.minute, d.second, 0])


def _volume_time(t):
    """ECMA-119 8.4.26.1: "YYYYMMDDHHMMSScc" and a GMT offset byte."""
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y%m%d%H%M%S").encode() + b"00\x00"


def _pad(text, size, fill=b" "):
    return text[:size] + (fill * size)[:size - len(text[:size])]


@dataclass
class Node:
    name: str                        # the POSIX name (Rock Ridge, and Joliet's source)
    source: str | None               # host file (None for directories)
    is_dir: bool
    mtime: float
    mode: int
    size: int = 0
    children: list = field(default_factory=list)
    parent: "Node" = None
    iso_name: bytes = b""
    joliet_name: bytes = b""
    extent: int = 0                  # file data, or the primary directory's extent
    joliet_extent: int = 0
    dir_size: int = 0
    joliet_size: int = 0
    number: int = 0                  # path table number (primary)
    joliet_number: int = 0


# -- the tree ------------------------------------------------------------------------

def _collect(mapping, now):
    """A Node tree from ``{iso path: host path}``; a host folder brings its contents."""
    root = Node("", None, True, now, 0o40555)

    def child(parent, name, is_dir, source, st):
        for c in parent.children:
            if c.name == name:
                if c.is_dir != is_dir or not is_dir:
                    raise ImageError(f"ISO: {source or name!r}: '{name}' is given twice")
                return c
        n = Node(name, source, is_dir, st.st_mtime if st else now,
                 (0o40555 if is_dir else 0o100444) if st is None else
                 (stat.S_IFDIR | 0o555 if is_dir else stat.S_IFREG | (st.st_mode & 0o555 | 0o444)),
                 0 if is_dir else st.st_size, parent=parent)
        parent.children.append(n)
        return n

    def add_host(parent, name, host):
        try:
            st = os.stat(host)
        except OSError as e:
            raise ImageError(f"ISO: {host}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            node = child(parent, name, True, host, st)
            try:
                names = sorted(os.listdir(host))
            except OSError as e:
                raise ImageError(f"ISO: {host}: {e.strerror}") from None
            for entry in names:
                add_host(node, entry, os.path.join(host, entry))
        elif stat.S_ISREG(st.st_mode):
            if st.st_size > MAX_FILE_SIZE:
                raise ImageError(f"ISO: {host}: {st.st_size} bytes; files of 4 GiB and more "
                                 f"need multi-extent records, which are not supported")
            child(parent, name, False, host, st)
        else:
            raise ImageError(f"ISO: {host}: not a regular file or folder")

    for iso_path, host in mapping.items():
        parts = [p for p in iso_path.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ImageError(f"ISO: path {iso_path!r} leaves the image")
        node = root
        if not parts:
            st = os.stat(host)
            if not stat.S_ISDIR(st.st_mode):
                raise ImageError(f"ISO: {host}: only a folder can be the root")
            for entry in sorted(os.listdir(host)):
                add_host(root, entry, os.path.join(host, entry))
            continue
        for part in parts[:-1]:
            node = child(node, part, True, None, None)
        add_host(node, parts[-1], host)
    return root


def _walk_dirs(root):
    """Directories in path-table order: by level, then parent number, then name."""
    out, level = [root], [root]
    while level:
        nxt = []
        for d in level:
            nxt.extend(sorted((c for c in d.children if c.is_dir), key=lambda c: c.iso_name))
        out.extend(nxt)
        level = nxt
    return out


def _depth(node):
    d = 0
    while node.parent is not None:
        d, node = d + 1, node.parent
    return d


def _iso_names(directory):
    """Level 1 names (8.3 d-characters; directories 8), unique in the folder."""
    used = set()
    for c in sorted(directory.children, key=lambda c: c.name):
        upper = c.name.upper()
        if c.is_dir:
            stem, ext = upper.replace(".", "_"), ""
        else:
            stem, _, ext = upper.rpartition(".") if "." in upper else (upper, "", "")
        stem = "".join(ch if ch in D_CHARS else "_" for ch in stem) or "_"
        ext = "".join(ch if ch in D_CHARS else "_" for ch in ext)[:3]
        base, n = stem[:8], 0
        while True:
            candidate = base + (("." + ext) if ext or not c.is_dir else "")
            if candidate not in used:
                break
            n += 1
            tag = f"~{n}"
            base = stem[:8 - len(tag)] + tag
        used.add(candidate)
        c.iso_name = (candidate if c.is_dir else candidate + ";1").encode("ascii")
        if c.is_dir:
            _iso_names(c)


def _joliet_names(directory):
    used = set()
    for c in sorted(directory.children, key=lambda c: c.name):
        name = c.name[:JOLIET_NAME_MAX]
        n = 0
        while name in used:
            n += 1
            tag = f"~{n}"
            stem, dot, ext = c.name.rpartition(".") if "." in c.name else (c.name, "", "")
            name = (stem[:JOLIET_NAME_MAX - len(tag) - len(dot + ext)] + tag + dot + ext)
        used.add(name)
        c.joliet_name = name.encode("utf-16-be", "surrogatepass")
        for bad in "*/:;?\\":
            if bad in name:
                c.joliet_name = name.replace(bad, "_").encode("utf-16-be", "surrogatepass")
        if c.is_dir:
            _joliet_names(c)


# -- Rock Ridge system-use entries -----------------------------------------------------

def _px(node):
    links = 2 + sum(1 for c in node.children if c.is_dir) if node.is_dir else 1
    return b"PX" + bytes([36, 1]) + both32(node.mode) + both32(links) + both32(0) + both32(0)


def _tf(node):
    return b"TF" + bytes([12, 1, 0x02]) + _record_time(node.mtime)


def _nm(name):
    raw = name.encode("utf-8", "surrogateescape")
    return b"NM" + bytes([5 + len(raw), 1, 0]) + raw


def _sp():
    return b"SP" + bytes([7, 1, 0xBE, 0xEF, 0])


def _er():
    return (b"ER" + bytes([8 + len(RRIP_ID) + len(RRIP_DES) + len(RRIP_SRC), 1, len(RRIP_ID),
                           len(RRIP_DES), len(RRIP_SRC), 1]) + RRIP_ID + RRIP_DES + RRIP_SRC)


def _ce(block, offset, length):
    return b"CE" + bytes([CE_LEN, 1]) + both32(block) + both32(offset) + both32(length)


@dataclass
class Record:
    """One directory record before the extents are known."""
    node: Node
    ident: bytes
    is_dir: bool
    inline: bytes = b""              # system use kept in the record
    overflow: bytes = b""            # system use in a continuation area
    ca_offset: int = 0               # where in the continuation areas (bytes from their start)
    target: Node = None              # whose extent/size the record names

    @property
    def length(self):
        n = 33 + len(self.ident) + (1 - len(self.ident) % 2) + len(self.inline) + \
            (CE_LEN if self.overflow else 0)
        return n + n % 2


def _split_su(ident, entries):
    """Entries that fit the record, and the rest for a continuation area."""
    room = MAX_RECORD - 33 - len(ident) - (1 - len(ident) % 2)
    total = sum(len(e) for e in entries)
    if total <= room:
        return b"".join(entries), b""
    inline, used = [], 0
    for i, e in enumerate(entries):
        if used + len(e) + CE_LEN > room:
            return b"".join(inline), b"".join(entries[i:])
        inline.append(e)
        used += len(e)
    return b"".join(inline), b""


def _records(directory, joliet, rock_ridge):
    """The records of one directory: '.', '..', then the children sorted."""
    parent = directory.parent or directory
    out = []
    for ident, target in ((b"\x00", directory), (b"\x01", parent)):
        entries = []
        if rock_ridge and not joliet:
            if directory.parent is None and ident == b"\x00":
                entries += [_sp(), _er()]
            entries += [_px(target), _tf(target)]
        inline, overflow = _split_su(ident, entries)
        out.append(Record(directory, ident, True, inline, overflow, target=target))
    key = (lambda c: c.joliet_name) if joliet else (lambda c: c.iso_name)
    for c in sorted(directory.children, key=key):
        ident = c.joliet_name if joliet else c.iso_name
        entries = [_px(c), _tf(c), _nm(c.name)] if rock_ridge and not joliet else []
        inline, overflow = _split_su(ident, entries)
        out.append(Record(c, ident, c.is_dir, inline, overflow, target=c))
    return out


def _dir_bytes(records):
    """Size of a directory extent: records never cross a block boundary."""
    used = 0
    for r in records:
        if used % BLOCK + r.length > BLOCK:
            used += BLOCK - used % BLOCK
        used += r.length
    return -(-used // BLOCK) * BLOCK or BLOCK


def _pack_record(r, extent, size, joliet, ca_block):
    flags = FLAG_DIRECTORY if r.is_dir else 0
    su = r.inline
    if r.overflow:
        su += _ce(ca_block + r.ca_offset // BLOCK, r.ca_offset % BLOCK, len(r.overflow))
    body = (bytes([0]) + both32(extent) + both32(size) + _record_time(r.target.mtime) +
            bytes([flags, 0, 0]) + both16(1) + bytes([len(r.ident)]) + r.ident)
    if len(r.ident) % 2 == 0:
        body += b"\x00"
    body += su
    rec = bytes([0]) + body
    if len(rec) % 2:
        rec += b"\x00"
    assert len(rec) == r.length <= MAX_RECORD
    return bytes([len(rec)]) + rec[1:]


def _path_table(dirs, joliet, big_endian):
    out = bytearray()
    fmt_l, fmt_h = (">I", ">H") if big_endian else ("<I", "<H")
    for d in dirs:
        ident = b"\x00" if d.parent is None else (d.joliet_name if joliet else d.iso_name)
        extent = d.joliet_extent if joliet else d.extent
        parent = d.parent or d
        number = parent.joliet_number if joliet else parent.number
        out += bytes([len(ident), 0]) + struct.pack(fmt_l, extent) + struct.pack(fmt_h, number)
        out += ident + (b"\x00" if len(ident) % 2 else b"")
    return bytes(out)


def _descriptor(kind, volume_id, space, pt_size, pt_l, pt_m, root_record, now, joliet):
    if joliet:
        vol = _pad(volume_id[:16].encode("utf-16-be"), 32, b"\x00 ")
        system = _pad("".encode("utf-16-be"), 32, b"\x00")
        escape = _pad(JOLIET_ESCAPE, 32, b"\x00")
        app = _pad("DRIVEBAY".encode("utf-16-be"), 128, b"\x00")
        blank = lambda n: b"\x00 " * (n // 2) + (b"\x00" if n % 2 else b"")
    else:
        vol = _pad(volume_id.encode("ascii"), 32)
        system = _pad(b"", 32)
        escape = bytes(32)
        app = _pad(b"DRIVEBAY", 128)
        blank = lambda n: b" " * n
    stamp = _volume_time(now)
    d = (bytes([kind]) + b"CD001" + bytes([1, 0]) + system + vol + bytes(8) + both32(space) +
         escape + both16(1) + both16(1) + both16(BLOCK) + both32(pt_size) +
         struct.pack("<I", pt_l) + bytes(4) + struct.pack(">I", pt_m) + bytes(4) +
         root_record + blank(128) + blank(128) + blank(128) + app +
         blank(37) + blank(37) + blank(37) + stamp + stamp + b"0" * 16 + b"\x00" + stamp +
         bytes([1, 0]) + bytes(512) + bytes(653))
    assert len(d) == BLOCK, len(d)
    return d


def _volume_id(text):
    vid = "".join(ch if ch in D_CHARS else "_" for ch in text.upper())[:VOLUME_ID_MAX]
    return vid or "CDROM"


def build_iso(path, sources, volume_id="CDROM", joliet=True, rock_ridge=True, now=None,
              progress=None):
    """Write an ISO 9660 image at ``path`` from host files and folders.

    ``sources``: a list of host paths (each lands in the root under its own
    name; a folder brings its whole tree) or a mapping ``{iso path: host
    path}`` (``"/"`` spreads a folder's contents over the root).  Returns
    the image's size in bytes."""
    path = os.fspath(path)
    now = now if now is not None else datetime.datetime.now().timestamp()
    mapping = sources if isinstance(sources, dict) else \
        {os.path.basename(os.path.normpath(s)): s for s in sources}
    root = _collect(mapping, now)
    root.mtime = now
    _iso_names(root)
    _joliet_names(root)
    dirs = _walk_dirs(root)
    for d in dirs:
        if _depth(d) > MAX_DEPTH - 1:
            raise ImageError(f"ISO: folder {d.name!r} is more than {MAX_DEPTH} levels deep "
                             f"(Rock Ridge relocation is not supported)")
    for i, d in enumerate(dirs, 1):
        d.number = i
    # Joliet's path table has its own order (by UCS-2 names).
    j_dirs = _walk_joliet(root)
    for i, d in enumerate(j_dirs, 1):
        d.joliet_number = i
    records = {id(d): _records(d, False, rock_ridge) for d in dirs}
    j_records = {id(d): _records(d, True, False) for d in dirs} if joliet else {}

    # Continuation areas: each record's overflow packed, never across a block.
    ca_used = 0
    for d in dirs:
        for r in records[id(d)]:
            if r.overflow:
                if ca_used % BLOCK + len(r.overflow) > BLOCK:
                    ca_used += BLOCK - ca_used % BLOCK
                r.ca_offset = ca_used
                ca_used += len(r.overflow)
    ca_blocks = -(-ca_used // BLOCK)

    pt = _path_table(dirs, False, False)          # sizes only; extents come later
    jpt = _path_table(j_dirs, True, False) if joliet else b""
    pt_blocks = -(-len(pt) // BLOCK)
    jpt_blocks = -(-len(jpt) // BLOCK)
    at = SYSTEM_AREA_BLOCKS + 2 + (1 if joliet else 0)
    pt_l, at = at, at + pt_blocks
    pt_m, at = at, at + pt_blocks
    if joliet:
        jpt_l, at = at, at + jpt_blocks
        jpt_m, at = at, at + jpt_blocks
    ca_block, at = at, at + ca_blocks
    for d in dirs:
        d.dir_size = _dir_bytes(records[id(d)])
        d.extent, at = at, at + d.dir_size // BLOCK
    if joliet:
        for d in j_dirs:
            d.joliet_size = _dir_bytes(j_records[id(d)])
            d.joliet_extent, at = at, at + d.joliet_size // BLOCK
    files = []

    def place(d):
        for c in sorted(d.children, key=lambda c: c.iso_name):
            if c.is_dir:
                continue
            c.extent = at_box[0] if c.size else 0
            at_box[0] += -(-c.size // BLOCK)
            files.append(c)
        for c in sorted(d.children, key=lambda c: c.iso_name):
            if c.is_dir:
                place(c)
    at_box = [at]
    place(root)
    total_blocks = at_box[0]
    if total_blocks >= 1 << 32:
        raise ImageError(f"ISO: {total_blocks} blocks do not fit a 32-bit volume space size")

    def extent_of(r, j):
        t = r.target
        if t.is_dir:
            return (t.joliet_extent, t.joliet_size) if j else (t.extent, t.dir_size)
        return t.extent, t.size

    def directory_bytes(d, j):
        out = bytearray()
        for r in (j_records if j else records)[id(d)]:
            if len(out) % BLOCK + r.length > BLOCK:
                out += bytes(BLOCK - len(out) % BLOCK)
            out += _pack_record(r, *extent_of(r, j), j, ca_block)
        return bytes(out) + bytes(-len(out) % BLOCK)

    if os.path.exists(path):
        raise ImageError(f"{path}: already exists; refusing to overwrite it")
    done, total = 0, sum(f.size for f in files) or 1
    try:
        with open(path, "wb") as out:
            def put(block, data):
                out.seek(block * BLOCK)
                out.write(data)
            root_rec = lambda j: _pack_record(
                Record(root, b"\x00", True, target=root), *extent_of(
                    Record(root, b"\x00", True, target=root), j), j, ca_block)
            put(SYSTEM_AREA_BLOCKS, _descriptor(1, _volume_id(volume_id), total_blocks,
                                                len(pt), pt_l, pt_m, root_rec(False), now,
                                                False))
            nxt = SYSTEM_AREA_BLOCKS + 1
            if joliet:
                put(nxt, _descriptor(2, volume_id, total_blocks, len(jpt), jpt_l, jpt_m,
                                     root_rec(True), now, True))
                nxt += 1
            put(nxt, bytes([255]) + b"CD001" + bytes([1]) + bytes(BLOCK - 7))
            put(pt_l, _path_table(dirs, False, False))
            put(pt_m, _path_table(dirs, False, True))
            if joliet:
                put(jpt_l, _path_table(j_dirs, True, False))
                put(jpt_m, _path_table(j_dirs, True, True))
            for d in dirs:
                for r in records[id(d)]:
                    if r.overflow:
                        out.seek(ca_block * BLOCK + r.ca_offset)
                        out.write(r.overflow)
                put(d.extent, directory_bytes(d, False))
                if joliet:
                    put(d.joliet_extent, directory_bytes(d, True))
            for f in files:
                if not f.size:
                    continue
                out.seek(f.extent * BLOCK)
                with open(f.source, "rb") as src:
                    remaining = f.size
                    while remaining:
                        chunk = src.read(min(1 << 20, remaining))
                        if not chunk:
                            raise ImageError(f"ISO: {f.source} shrank while it was copied")
                        out.write(chunk)
                        remaining -= len(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            out.truncate(total_blocks * BLOCK)
    except OSError as e:
        os.unlink(path)
        raise ImageError(f"{path}: writing the ISO image: {e.strerror}") from None
    except BaseException:
        os.unlink(path)
        raise
    return total_blocks * BLOCK


def _walk_joliet(root):
    out, level = [root], [root]
    while level:
        nxt = []
        for d in level:
            nxt.extend(sorted((c for c in d.children if c.is_dir), key=lambda c: c.joliet_name))
        out.extend(nxt)
        level = nxt
    return out


# -- VirtualBox VISO files ----------------------------------------------------------------

def write_viso(path, sources, volume_id="CDROM"):
    """A VirtualBox VISO file naming ``sources`` (as ``build_iso`` takes them)."""
    mapping = sources if isinstance(sources, dict) else \
        {os.path.basename(os.path.normpath(s)): s for s in sources}
    lines = [f"{VISO_MARKER} {uuidlib.uuid4()}", f"--volume-id={shlex.quote(volume_id)}"]
    for iso_path, host in mapping.items():
        target = "/" + iso_path.lstrip("/")
        lines.append(shlex.quote(f"{target}={os.path.abspath(host)}"))
    with open(path, "x", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def read_viso(path):
    """``(volume_id, {iso path: host path})`` from a VISO file (the subset of
    VirtualBox's ISO maker options that names files and the volume)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ImageError(f"{path}: cannot read the VISO file: {e}") from None
    words = shlex.split(text, comments=True)
    if not words or words[0] not in (VISO_MARKER, "--iprt-iso-maker-file-marker"):
        raise ImageError(f"{path}: not a VISO file (it must start with {VISO_MARKER})")
    volume_id, mapping = "CDROM", {}
    base = os.path.dirname(os.path.abspath(path))
    for w in words[2:]:
        if w.startswith("--volume-id="):
            volume_id = w.split("=", 1)[1]
        elif w.startswith("--"):
            continue           # options of VirtualBox's ISO maker we do not model
        elif "=" in w:
            iso_path, host = w.split("=", 1)
            mapping[iso_path] = os.path.join(base, host)
        else:
            host = os.path.join(base, w)
            mapping[os.path.basename(os.path.normpath(host))] = host
    return volume_id, mapping


def build_iso_from_viso(viso_path, iso_path, **options):
    volume_id, mapping = read_viso(viso_path)
    return build_iso(iso_path, mapping, volume_id=volume_id, **options)
