"""iSCSI LUNs as images: drivebay's own initiator (block/iscsi_session.py).

Opened from a URL in QEMU's spelling::

    iscsi://[user[%password]@]host[:port]/target-iqn/lun

The LUN must be a direct-access block device (SBC).  Opening runs INQUIRY
(the standard page: is there such a LUN, is it a disk), TEST UNIT READY,
INQUIRY for the Block Limits and Logical Block Provisioning VPD pages when
the LUN lists them, READ CAPACITY(10) and, for
disks past 2 TiB or to learn thin provisioning, READ CAPACITY(16), and MODE
SENSE for the write-protect bit.  Reads and writes are READ(16)/WRITE(16) of
at most the LUN's maximum transfer length (and MAX_COMMAND_BYTES); flush is
SYNCHRONIZE CACHE(10); discard is UNMAP when the LUN reports it.  Every byte
of the LUN is DATA to ``block_status`` (the initiator cannot see the target's
allocation).

A CHECK CONDITION becomes an ImageError naming the command, sense key and
ASC/ASCQ, with the errno a device reports: EIO for medium and hardware
errors, EROFS for a write-protected LUN, ENOSPC when a thin LUN has no space
left, EINVAL for an illegal request.  UNIT ATTENTION (a fresh LUN, a resize)
and BUSY are retried a few times.
"""

import errno
import struct
import threading
import time
import urllib.parse

from drivebay.block.driver import BlockDriver, Extent, State
from drivebay.block.iscsi_pdu import ProtocolError, encode_lun
from drivebay.block.iscsi_session import DEFAULT_PORT, DEFAULT_TIMEOUT, Session, initiator_name
from drivebay.errors import ConfigError, ImageError, UnsupportedOperation

SCHEME = "iscsi://"
MAX_COMMAND_BYTES = 1 << 20       # one READ/WRITE at most (smaller if the LUN says so)
RETRIES = 5                       # UNIT ATTENTION / BUSY / TASK SET FULL
BUSY_PAUSE = 0.05

GOOD, CHECK_CONDITION, BUSY, RESERVATION_CONFLICT, TASK_SET_FULL = 0x00, 0x02, 0x08, 0x18, 0x28
SENSE_KEYS = {0x0: "NO SENSE", 0x1: "RECOVERED ERROR", 0x2: "NOT READY", 0x3: "MEDIUM ERROR",
              0x4: "HARDWARE ERROR", 0x5: "ILLEGAL REQUEST", 0x6: "UNIT ATTENTION",
              0x7: "DATA PROTECT", 0x8: "BLANK CHECK", 0xB: "ABORTED COMMAND",
              0xD: "VOLUME OVERFLOW", 0xE: "MISCOMPARE"}
UNIT_ATTENTION = 0x6

# CDB opcodes (SPC-4, SBC-3)
TEST_UNIT_READY = 0x00
INQUIRY = 0x12
MODE_SENSE_6 = 0x1A
READ_CAPACITY_10 = 0x25
SYNCHRONIZE_CACHE_10 = 0x35
UNMAP = 0x42
READ_16 = 0x88
WRITE_16 = 0x8A
SERVICE_ACTION_IN_16 = 0x9E
SA_READ_CAPACITY_16 = 0x10
VPD_SUPPORTED = 0x00
VPD_BLOCK_LIMITS = 0xB0
VPD_PROVISIONING = 0xB2


def is_url(path):
    return isinstance(path, str) and path[:len(SCHEME)].lower() == SCHEME


# Arguments after '?', as libiscsi's URLs take them (target_user and
# target_password: the target's account for mutual CHAP), plus the
# initiator's IQN; values are percent-encoded.
URL_ARGUMENTS = ("target_user", "target_password", "initiator")


def mask_url(url):
    """``url`` with its passwords replaced by ``***`` (for messages and ``path``)."""
    rest = url[len(SCHEME):]
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if at and "%" in userinfo:
        userinfo = userinfo.partition("%")[0] + "%***"
    path, question, query = path.partition("?")
    if question:
        query = "&".join("target_password=***" if part.startswith("target_password=") else part
                         for part in query.split("&"))
    return f"{url[:len(SCHEME)]}{userinfo}{at}{hostport}{slash}{path}{question}{query}"


def _url_arguments(url, query):
    args = {}
    for part in query.split("&") if query else ():
        key, eq, value = part.partition("=")
        if not eq or key not in URL_ARGUMENTS:
            raise ConfigError(f"iSCSI URL {mask_url(url)}: unknown argument {key!r} (known: "
                              f"{', '.join(URL_ARGUMENTS)})")
        if key in args:
            raise ConfigError(f"iSCSI URL {mask_url(url)}: argument {key!r} given twice")
        args[key] = urllib.parse.unquote(value)
    if ("target_user" in args) != ("target_password" in args):
        raise ConfigError(f"iSCSI URL {mask_url(url)}: mutual CHAP needs both target_user "
                          f"and target_password")
    return args


class IscsiUrl:
    """The parts of an iscsi:// URL; ``masked`` is the URL without the password."""

    def __init__(self, url):
        if not is_url(url):
            raise ConfigError(f"{url!r}: not an iscsi:// URL")
        rest = url[len(SCHEME):]
        authority, slash, path = rest.partition("/")
        userinfo, at, hostport = authority.rpartition("@")
        self.user = self.password = None
        if at:
            user, pct, password = userinfo.partition("%")
            if not user:
                raise ConfigError(f"iSCSI URL {mask_url(url)}: the user name is empty")
            self.user, self.password = user, password if pct else None
            if self.password is None:
                raise ConfigError(f"iSCSI URL {mask_url(url)}: user {user!r} without a "
                                  f"password (write user%password@)")
        if hostport.startswith("["):
            host, bracket, port = hostport[1:].partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise ConfigError(f"iSCSI URL {mask_url(url)}: the host {hostport!r} is not "
                                  f"a bracketed IPv6 address")
            port = port[1:]
        else:
            host, _, port = hostport.partition(":")
        if not host:
            raise ConfigError(f"iSCSI URL {mask_url(url)}: the host is missing")
        if port:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"iSCSI URL {mask_url(url)}: the port {port!r} is not "
                                  f"a number from 1 to 65535")
        self.host, self.port = host, int(port) if port else DEFAULT_PORT
        path, _, query = path.partition("?")
        args = _url_arguments(url, query)
        self.target_user = args.get("target_user")
        self.target_password = args.get("target_password")
        self.initiator = args.get("initiator")
        target, _, lun = path.rpartition("/")
        if not slash or not target:
            raise ConfigError(f"iSCSI URL {mask_url(url)}: the target name is missing "
                              f"(iscsi://host[:port]/target-iqn/lun)")
        if not lun.isdigit() or int(lun) > 16383:
            raise ConfigError(f"iSCSI URL {mask_url(url)}: the LUN {lun!r} is not a number "
                              f"from 0 to 16383")
        if any(c.isspace() or not c.isprintable() for c in target):
            raise ConfigError(f"iSCSI URL {mask_url(url)}: the target name {target!r} holds "
                              f"spaces or control characters")
        self.target, self.lun = target, int(lun)
        self.masked = mask_url(url)


class IscsiConnection:
    """What a BlockDriver keeps as its ``file``: the session to the LUN.

    A session whose connection failed (the target restarted, a network
    blip) is replaced by a new login the next time a command needs it: once
    per command, so a target that stays away still gives an error at once."""

    def __init__(self, url, writable, timeout=DEFAULT_TIMEOUT, target_user=None,
                 target_password=None):
        self.url = url
        self.path = url.masked
        self.writable = writable
        self.direct = None
        self.lun_field = encode_lun(url.lun)
        self.reconnects = 0
        self._login_args = dict(user=url.user, password=url.password,
                                target_user=target_user or url.target_user,
                                target_password=target_password or url.target_password,
                                timeout=timeout,
                                initiator_name=url.initiator or initiator_name())
        self._relogin = threading.Lock()
        self._closed = False
        self.session = self._login()

    def _login(self):
        return Session(self.url.host, self.url.port, self.url.target, **self._login_args)

    def execute(self, cdb, read_into=None, write=None):
        """Run ``cdb`` on the LUN, logging in again once if the connection
        had failed; a ScsiResult."""
        session = self.session
        try:
            return session.execute(self.lun_field, cdb, read_into=read_into, write=write)
        except ProtocolError as lost:
            with self._relogin:
                if self._closed:
                    raise
                if self.session is session:
                    try:
                        self.session = self._login()
                    except ImageError as e:
                        err = ProtocolError(f"{lost}; logging in again failed: {e}",
                                            getattr(lost, "errno", None))
                        raise err from None
                    self.reconnects += 1
                    session.close()
            return self.session.execute(self.lun_field, cdb, read_into=read_into, write=write)

    def set_host_cache(self, enabled, **options):
        """No host page cache in the way of a network LUN."""

    def close(self):
        with self._relogin:
            self._closed = True
        self.session.close()


class ScsiError(ImageError):
    def __init__(self, message, code, key=None, asc=None, ascq=None):
        super().__init__(message)
        self.errno = code
        self.sense_key, self.asc, self.ascq = key, asc, ascq


def parse_sense(sense):
    """``(key, asc, ascq)`` from fixed (0x70/0x71) or descriptor (0x72/0x73) sense."""
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    if len(sense) >= 14 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F, sense[12], sense[13]
    if len(sense) >= 3 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F, 0, 0
    return None, 0, 0


def sense_errno(key, asc, ascq):
    if key == 0x7:
        return errno.ENOSPC if (asc, ascq) == (0x27, 0x07) else errno.EROFS
    if key == 0x5:
        return errno.EINVAL
    if key == 0xD:
        return errno.ENOSPC
    return errno.EIO


class IscsiDriver(BlockDriver):
    format_name = "iscsi"
    description = "a LUN of an iSCSI target (iscsi://host[:port]/target-iqn/lun)"

    @classmethod
    def open(cls, path, writable=False, for_check=False, timeout=DEFAULT_TIMEOUT,
             target_user=None, target_password=None):
        """Log in and open the LUN named by the URL ``path``.  Mutual CHAP
        takes the target's account through ``target_user``/``target_password``."""
        url = IscsiUrl(path)
        conn = IscsiConnection(url, writable, timeout, target_user, target_password)
        return cls._open_on(conn, writable, for_check)

    def _open(self):
        self.variant = "iscsi"
        self._rmw = threading.Lock()
        inquiry = self._short_check(self.command(bytes([INQUIRY, 0, 0, 0, 96, 0]), "INQUIRY",
                                                 read=96), 36, "INQUIRY")
        qualifier, kind = inquiry[0] >> 5, inquiry[0] & 0x1F
        if qualifier != 0:
            raise ImageError(f"{self.path}: no LUN {self.file.url.lun} on the target "
                             f"(peripheral qualifier {qualifier})")
        if kind != 0:
            raise UnsupportedOperation(f"{self.path}: LUN is SCSI peripheral type {kind:#04x}, "
                                       f"not a direct-access disk")
        self.command(bytes(6), "TEST UNIT READY")
        self.vendor = inquiry[8:16].decode("ascii", "replace").strip()
        self.product = inquiry[16:32].decode("ascii", "replace").strip()
        self.revision = inquiry[32:36].decode("ascii", "replace").strip()
        pages = self._vpd_pages()
        self.max_transfer_blocks = 0
        self.max_unmap_blocks = 0
        self.max_unmap_descriptors = 0
        self.unmap = False
        if VPD_BLOCK_LIMITS in pages:
            limits = self._vpd(VPD_BLOCK_LIMITS, 64)
            if len(limits) >= 28:
                self.max_transfer_blocks = int.from_bytes(limits[8:12], "big")
                self.max_unmap_blocks = int.from_bytes(limits[20:24], "big")
                self.max_unmap_descriptors = int.from_bytes(limits[24:28], "big")
        if VPD_PROVISIONING in pages:
            prov = self._vpd(VPD_PROVISIONING, 8)
            self.unmap = len(prov) > 5 and bool(prov[5] & 0x80)       # LBPU
        cap = self._short_check(self.command(bytes([READ_CAPACITY_10] + [0] * 9),
                                             "READ CAPACITY(10)", read=8), 8, "READ CAPACITY(10)")
        last, self.block_size = struct.unpack(">II", cap)
        thin = False
        if last == 0xFFFFFFFF or self.unmap or VPD_PROVISIONING in pages:
            cdb = bytes([SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16]) + bytes(8) + \
                (32).to_bytes(4, "big") + bytes(2)
            cap16 = self._short_check(self.command(cdb, "READ CAPACITY(16)", read=32), 15,
                                      "READ CAPACITY(16)")
            last, self.block_size = struct.unpack(">QI", cap16[:12])
            thin = bool(cap16[14] & 0x80)                            # LBPME
        if not self.block_size or self.block_size & (self.block_size - 1) or \
                self.block_size > 65536:
            raise ImageError(f"{self.path}: LUN reports a block size of {self.block_size} bytes")
        self.unmap = self.unmap or (thin and VPD_PROVISIONING not in pages)
        self.size = (last + 1) * self.block_size
        self.cluster_size = self.block_size
        self.write_protected = self._write_protected()
        if self.writable and self.write_protected:
            raise ScsiError(f"{self.path}: the LUN is write-protected (MODE SENSE WP bit); "
                            f"open it read-only", errno.EROFS)
        limit = MAX_COMMAND_BYTES // self.block_size
        if self.max_transfer_blocks:
            limit = min(limit, self.max_transfer_blocks)
        self.chunk_blocks = max(1, limit)

    def _short_check(self, data, need, what):
        if len(data) < need:
            raise ImageError(f"{self.path}: {what} returned {len(data)} bytes, "
                             f"fewer than the {need} it must")
        return data

    @property
    def session(self):
        """The current iSCSI session (a new one after a reconnect)."""
        return self.file.session

    def _vpd_pages(self):
        try:
            data = self._vpd(VPD_SUPPORTED, 255)
        except ScsiError:
            return set()
        return set(data[4:4 + data[3]]) if len(data) >= 4 else set()

    def _vpd(self, page, length):
        return self.command(bytes([INQUIRY, 1, page, length >> 8, length & 0xFF, 0]),
                            f"INQUIRY VPD page {page:#04x}", read=length)

    def _write_protected(self):
        try:
            header = self.command(bytes([MODE_SENSE_6, 0x08, 0x3F, 0, 4, 0]), "MODE SENSE(6)",
                                  read=4)
        except ScsiError:
            return False
        return len(header) >= 3 and bool(header[2] & 0x80)

    # -- commands --------------------------------------------------------------------------

    def command(self, cdb, what, read=None, into=None, write=None, lba=None):
        """Run ``cdb``; returns the data read (``read`` bytes at most, or into
        ``into``).  A CHECK CONDITION raises ScsiError."""
        for attempt in range(RETRIES + 1):
            buf = None
            if read is not None:
                buf = bytearray(read)
                into = memoryview(buf)
            result = self.file.execute(cdb, read_into=into, write=write)
            status = result.status
            if status == GOOD:
                if buf is not None:
                    return bytes(buf[:read - max(0, result.residual)])
                if result.residual and lba is not None:   # READ/WRITE: all of it or an error
                    raise ScsiError(f"{self.path}: {what} at LBA {lba}: the target transferred "
                                    f"{'less' if result.residual > 0 else 'more'} than asked "
                                    f"(residual {abs(result.residual)} bytes)", errno.EIO)
                return None
            if status == CHECK_CONDITION:
                key, asc, ascq = parse_sense(result.sense)
                if key == UNIT_ATTENTION and attempt < RETRIES:
                    continue
                where = f" at LBA {lba}" if lba is not None else ""
                name = SENSE_KEYS.get(key, "unknown") if key is not None else "no sense data"
                raise ScsiError(f"{self.path}: {what}{where} failed: CHECK CONDITION, sense key "
                                f"{name}" + (f" ({key:#x}), ASC/ASCQ {asc:02x}/{ascq:02x}"
                                             if key is not None else ""),
                                sense_errno(key, asc, ascq), key, asc, ascq)
            if status in (BUSY, TASK_SET_FULL) and attempt < RETRIES:
                time.sleep(BUSY_PAUSE * (attempt + 1))
                continue
            code = errno.EBUSY if status in (BUSY, TASK_SET_FULL, RESERVATION_CONFLICT) \
                else errno.EIO
            raise ScsiError(f"{self.path}: {what} failed: SCSI status {status:#04x}", code)
        raise AssertionError("unreachable")

    def _rw(self, opcode, lba, blocks, view, what):
        step = self.chunk_blocks
        at = 0
        bs = self.block_size
        while blocks:
            n = min(step, blocks)
            cdb = struct.pack(">BBQIBB", opcode, 0, lba, n, 0, 0)
            part = view[at:at + n * bs]
            if opcode == READ_16:
                self.command(cdb, what, into=part, lba=lba)
            else:
                self.command(cdb, what, write=part, lba=lba)
            lba += n
            blocks -= n
            at += n * bs

    def _read_covering(self, offset, n):
        """The whole blocks around ``offset..offset+n`` read into a new
        buffer, and where the range starts in it."""
        bs = self.block_size
        start = offset - offset % bs
        end = -(-(offset + n) // bs) * bs
        bounce = bytearray(end - start)
        self._rw(READ_16, start // bs, (end - start) // bs, memoryview(bounce), "READ(16)")
        return bounce, offset - start

    def _aligned(self, offset, length):
        bs = self.block_size
        return offset % bs == 0 and length % bs == 0

    # -- the data path -------------------------------------------------------------------

    def block_status(self, offset, length):
        self.check_range(offset, length)
        return [Extent(offset, length, State.DATA, offset)] if length else []

    def readinto(self, offset, buf):
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self._read(offset, view)

    def read_allocated_into(self, ext, view):
        self._read(ext.host_offset, view)

    def _read(self, offset, view):
        n = len(view)
        if not n:
            return
        if self._aligned(offset, n):
            self._rw(READ_16, offset // self.block_size, n // self.block_size, view, "READ(16)")
            return
        bounce, skip = self._read_covering(offset, n)
        view[:] = bounce[skip:skip + n]

    def write(self, offset, data):
        self._require_writable()
        view = memoryview(data).cast("B")
        self.check_range(offset, len(view))
        n = len(view)
        if not n:
            return
        bs = self.block_size
        if self._aligned(offset, n):
            self._rw(WRITE_16, offset // bs, n // bs, view, "WRITE(16)")
            return
        with self._rmw:           # partial blocks: read, patch, write back
            bounce, skip = self._read_covering(offset, n)
            bounce[skip:skip + n] = view
            self._rw(WRITE_16, (offset - skip) // bs, len(bounce) // bs, memoryview(bounce),
                     "WRITE(16)")

    def discard(self, offset, length):
        """UNMAP the whole blocks inside the range (nothing when the LUN has no UNMAP)."""
        self._require_writable()
        self.check_range(offset, length)
        if not self.unmap:
            return
        bs = self.block_size
        lba = -(-offset // bs)
        end = (offset + length) // bs
        per = self.max_unmap_blocks or 0xFFFFFFFF
        per_command = max(1, min(self.max_unmap_descriptors or 64, 64))
        while lba < end:
            descs = []
            while lba < end and len(descs) < per_command:
                n = min(per, end - lba, 0xFFFFFFFF)
                descs.append(struct.pack(">QII", lba, n, 0))
                lba += n
            body = b"".join(descs)
            params = struct.pack(">HH4x", 6 + len(body), len(body)) + body
            cdb = bytes([UNMAP, 0, 0, 0, 0, 0, 0]) + len(params).to_bytes(2, "big") + b"\0"
            self.command(cdb, "UNMAP", write=params)

    def flush(self):
        if self.writable:
            self.command(bytes([SYNCHRONIZE_CACHE_10] + [0] * 9), "SYNCHRONIZE CACHE(10)")

    def info(self):
        url = self.file.url
        return {"target": url.target, "lun": url.lun, "portal": f"{url.host}:{url.port}",
                "vendor": self.vendor, "product": self.product, "block_size": self.block_size,
                "unmap": self.unmap, "write_protected": self.write_protected}
