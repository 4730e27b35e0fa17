"""The Virtual Media Manager: every disk, optical and floppy image drivebay knows.

Modelled on VirtualBox's media registry (the MediaRegistry of VirtualBox.xml
and the Medium object of Main/src-server/MediumImpl.cpp).  The registry is
one human-readable JSON file, ``DRIVEBAY_HOME/media.json``:

    {
      "schema": 1,
      "kind": "drivebay-media-registry",
      "hard_disks": [
        {"uuid": "6f1c...", "location": "/home/u/disks/base.vdi", "format": "vdi",
         "type": "normal", "autoreset": true, "description": "", "properties": {},
         "parent": null, "uuid_in_image": true},
        {"uuid": "93a0...", "location": "/home/u/.drivebay/machines/web/Snapshots/{93a0...}.vdi",
         "format": "vdi", "type": "normal", ..., "parent": "6f1c..."}
      ],
      "dvd_images": [ {... "format": "iso", "type": "readonly", "uuid_in_image": false} ],
      "floppy_images": [ ... ]
    }

Differencing images are listed flat with the UUID of their parent; the tree
is computed.  Images whose format stores no UUID (raw, ISO, floppy) get one
here, as VirtualBox gives them one (``uuid_in_image`` false).

Reading is strict: an unknown schema version, a missing or unknown field, a
value of the wrong kind, a duplicate UUID or a parent that is not listed is a
MediaError naming the file and the field, and nothing is changed.  Writes go
to a temporary file in the same folder that is then renamed over the old one,
so a killed process leaves the old or the new registry, never half of one.
Mutating operations hold ``home_lock`` (an flock on ``DRIVEBAY_HOME/.lock``)
so two drivebay processes do not interleave their read-modify-write cycles.

Which VMs use a medium is not stored here: VM files (system/vm.py) record
their attachments, and the system layer answers through the ``MediaUsers``
interface this module defines (block never imports system).

Write modes (``type``), with the rules VirtualBox's Medium::setType keeps:
normal, writethrough, shareable (fixed-size images only), immutable and
multiattach (base images only: their differencing images are made per VM),
readonly (CD/DVD always; floppies may be).
"""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.block import merge as merge_mod
from drivebay.block.chain import open_chain
from drivebay.block.convert import convert
from drivebay.block.driver import NULL_UUID
from drivebay.block.drivers import driver_for, open_image
from drivebay.errors import DrivebayError, MediaError

SCHEMA = 1
REGISTRY_KIND = "drivebay-media-registry"
REGISTRY_FILE = "media.json"
LOCK_FILE = ".lock"
HOME_ENV = "DRIVEBAY_HOME"
DEFAULT_HOME = "~/.drivebay"

DEVICE_TYPES = ("hdd", "dvd", "floppy")
SECTIONS = {"hdd": "hard_disks", "dvd": "dvd_images", "floppy": "floppy_images"}
DEVICE_WORDS = {"hdd": "hard disk", "dvd": "CD/DVD image", "floppy": "floppy image"}
MEDIUM_TYPES = ("normal", "writethrough", "shareable", "immutable", "multiattach", "readonly")
ALLOWED_TYPES = {
    "hdd": ("normal", "writethrough", "shareable", "immutable", "multiattach"),
    "dvd": ("readonly",),
    "floppy": ("normal", "readonly"),
}
# The largest floppy image VirtualBox accepts (shared/reference/formats.md):
# 2.88 MB media with 84 tracks; anything larger is not a floppy.
MAX_FLOPPY_SIZE = 4_030_464
ISO_PVD_OFFSET = 0x8001            # ECMA-119 8.4: "CD001" at byte 1 of sector 16
ISO_STANDARD_ID = b"CD001"
VISO_MARKER = b"--iprt-iso-maker-file-marker"     # VirtualBox VISO files start so
ISCSI_FORMAT = "iscsi"
ISCSI_SCHEME = "iscsi://"
ISCSI_PORT = 3260
# The properties VirtualBox keeps for an iSCSI medium (its ISCSI backend's
# configuration keys); drivebay reads the initiator's CHAP account from them.
ISCSI_PROPERTIES = ("TargetAddress", "TargetName", "LUN", "InitiatorName",
                    "InitiatorUsername", "InitiatorSecret", "TargetUsername", "TargetSecret")
ISCSI_SECRETS = ("InitiatorSecret", "TargetSecret")
# Properties the URL carries as arguments (block/iscsi.py URL_ARGUMENTS).
ISCSI_URL_ARGUMENTS = (("target_user", "TargetUsername"), ("target_password", "TargetSecret"),
                       ("initiator", "InitiatorName"))


def default_home():
    """DRIVEBAY_HOME, or ~/.drivebay as VirtualBox keeps ~/.config/VirtualBox."""
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or DEFAULT_HOME))


def canonical_uuid(value, what="UUID"):
    """A UUID given as text or uuid.UUID, as lowercase text; braces are accepted."""
    try:
        return str(value if isinstance(value, uuidlib.UUID)
                   else uuidlib.UUID(str(value).strip().strip("{}")))
    except ValueError:
        raise MediaError(f"{what} {value!r} is not a UUID") from None


def looks_like_uuid(text):
    try:
        uuidlib.UUID(str(text).strip().strip("{}"))
        return True
    except ValueError:
        return False


# -- strict reading of human-edited JSON ---------------------------------------------

_MISSING = object()


class Fields:
    """One JSON object read field by field; every complaint names file and field.

    ``take`` removes a field and checks its kind (and choices); ``done``
    refuses fields nobody took, so a typo in a hand-edited file is an error
    rather than a setting silently ignored."""

    def __init__(self, data, file, where, error=MediaError):
        self.file, self.where, self.error = file, where, error
        if not isinstance(data, dict):
            raise error(f"{file}: {where or 'the file'} must be an object, not "
                        f"{type(data).__name__}")
        self.data = dict(data)

    def name(self, key):
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key, message):
        raise self.error(f"{self.file}: field {self.name(key)}: {message}")

    def take(self, key, kind, default=_MISSING, choices=None, nullable=False):
        if key not in self.data:
            if default is _MISSING:
                self.fail(key, "missing")
            return default
        value = self.data.pop(key)
        if value is None and nullable:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(key, f"{value!r} is not of type {names}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def uuid(self, key, nullable=False):
        value = self.take(key, str, nullable=nullable)
        if value is None:
            return None
        if not looks_like_uuid(value):
            self.fail(key, f"{value!r} is not a UUID")
        return canonical_uuid(value)

    def sub(self, key, default=_MISSING):
        value = self.take(key, dict, default=default)
        return None if value is None else Fields(value, self.file, self.name(key), self.error)

    def items(self, key, default=_MISSING):
        value = self.take(key, list, default=default)
        return [] if value is None else \
            [(f"{self.name(key)}[{i}]", item) for i, item in enumerate(value)]

    def done(self):
        if self.data:
            self.fail(sorted(self.data)[0], "unknown field")


def read_json(path, error, kind):
    """The parsed content of a JSON file of ``kind``, schema checked."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    top = Fields(data, path, "", error)
    found_kind = top.take("kind", str)
    if found_kind != kind:
        top.fail("kind", f"{found_kind!r}, expected {kind!r}")
    schema = top.take("schema", int)
    if schema != SCHEMA:
        top.fail("schema", f"version {schema} is not supported (this drivebay reads {SCHEMA})")
    return top


def write_json_atomic(path, data):
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_lock_state = threading.local()


@contextlib.contextmanager
def home_lock(home):
    """Hold the home folder's lock (re-entrant within one thread)."""
    home = os.path.abspath(home)
    held = getattr(_lock_state, "held", None)
    if held is None:
        held = _lock_state.held = {}
    if home in held:
        held[home][1] += 1
        try:
            yield
        finally:
            held[home][1] -= 1
        return
    os.makedirs(home, exist_ok=True)
    fd = os.open(os.path.join(home, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held[home] = [fd, 1]
        try:
            yield
        finally:
            del held[home]
    finally:
        os.close(fd)


# -- the media ---------------------------------------------------------------------------

@dataclass
class Medium:
    uuid: str
    location: str
    device: str = "hdd"
    format: str = "vdi"
    type: str = "normal"
    autoreset: bool = True
    description: str = ""
    properties: dict = field(default_factory=dict)
    parent: str | None = None
    uuid_in_image: bool = True

    @property
    def name(self):
        return os.path.basename(self.location)

    @property
    def is_network(self):
        """An iSCSI LUN: no file, its location a URL (block/iscsi.py)."""
        return self.format == ISCSI_FORMAT

    @property
    def accessible(self):
        if self.is_network:
            return True              # known only by logging in; refresh and info do
        return os.path.isfile(self.location)

    @property
    def open_location(self):
        """What open_image opens: the file, or an iSCSI LUN's URL with the
        initiator's CHAP account from the properties VirtualBox names."""
        if not self.is_network:
            return self.location
        props = self.properties
        scheme, rest = self.location.split("://", 1)
        user = props.get("InitiatorUsername")
        url = f"{scheme}://{user}%{props.get('InitiatorSecret', '')}@{rest}" if user \
            else self.location
        args = [(key, props[name]) for key, name in ISCSI_URL_ARGUMENTS if props.get(name)]
        if args:
            url += "?" + "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in args)
        return url

    def require_file(self, action):
        if self.is_network:
            raise MediaError(f"Cannot {action} '{self.location}': it is an iSCSI LUN, not a "
                             f"file drivebay manages")

    def to_json(self):
        return {"uuid": self.uuid, "location": self.location, "format": self.format,
                "type": self.type, "autoreset": self.autoreset,
                "description": self.description, "properties": dict(self.properties),
                "parent": self.parent, "uuid_in_image": self.uuid_in_image}


class MediaUsers:
    """What the media manager asks the layer above about VMs (system/vm.py
    implements it over the VM files).  The default knows no VMs."""

    def users(self, uuid):
        """``[(vm_name, vm_uuid, where)]`` for every VM config (current state or a
        snapshot) that refers to the medium ``uuid``."""
        return []

    def running(self, uuid):
        """Names of running VMs using ``uuid``."""
        return []

    def relocate(self, uuid, location):
        """Rewrite every VM file that records ``uuid``'s location."""

    def release(self, uuid):
        """Detach ``uuid`` from the current state of every VM; names of the VMs."""
        return []


def _image_facts(path, format=None):
    """(format, uuid or None, parent uuid or None, size, variant) of an image file."""
    with open_image(path, format=format) as image:
        uuid = None if image.uuid in (None, NULL_UUID) else str(image.uuid)
        parent = None if image.parent_uuid in (None, NULL_UUID) else str(image.parent_uuid)
        return image.format_name, uuid, parent, image.size, image.variant


class MediaRegistry:
    """The known media of one home folder.

    ``MediaRegistry.load(home)`` reads ``media.json`` (an absent file is an
    empty registry); mutating methods change memory only and ``save()``
    writes the file.  ``transaction(home)`` is the usual way: it locks the
    home, loads, yields the registry and saves only when the block succeeds.
    """

    def __init__(self, home, media=(), users=None):
        self.home = os.path.abspath(home)
        self.path = os.path.join(self.home, REGISTRY_FILE)
        self.media = {}
        for m in media:
            self.media[m.uuid] = m
        self.users = users or MediaUsers()
        self.dirty = False

    # -- persistence ------------------------------------------------------------------

    @classmethod
    def load(cls, home=None, users=None):
        home = os.path.abspath(home or default_home())
        reg = cls(home, users=users)
        if not os.path.exists(reg.path):
            return reg
        top = read_json(reg.path, MediaError, REGISTRY_KIND)
        locations = {}
        for device, section in SECTIONS.items():
            for where, item in top.items(section, default=[]):
                m = cls._read_medium(item, reg.path, where, device)
                if m.uuid in reg.media:
                    raise MediaError(f"{reg.path}: field {where}.uuid: UUID {m.uuid} is listed "
                                     f"twice (also for {reg.media[m.uuid].location})")
                if m.location in locations:
                    raise MediaError(f"{reg.path}: field {where}.location: {m.location} is "
                                     f"listed twice (also as {locations[m.location]})")
                locations[m.location] = where
                reg.media[m.uuid] = m
        top.done()
        for m in reg.media.values():
            if m.parent is not None:
                parent = reg.media.get(m.parent)
                if parent is None or parent.device != "hdd" or m.device != "hdd":
                    raise MediaError(f"{reg.path}: field parent of {m.location}: parent "
                                     f"{m.parent} is not a registered hard disk")
        for m in reg.media.values():
            reg._check_no_loop(m)
        return reg

    @staticmethod
    def _read_medium(item, path, where, device):
        f = Fields(item, path, where)
        uuid = f.uuid("uuid")
        location = f.take("location", str)
        fmt = f.take("format", str)
        if fmt == ISCSI_FORMAT:
            if not location.startswith(ISCSI_SCHEME):
                f.fail("location", f"{location!r}: an iSCSI medium's location is an "
                                   f"{ISCSI_SCHEME} URL")
        elif not os.path.isabs(location):
            f.fail("location", f"{location!r} is not an absolute path")
        mtype = f.take("type", str, choices=ALLOWED_TYPES[device])
        autoreset = f.take("autoreset", bool, default=True)
        description = f.take("description", str, default="")
        props = f.take("properties", dict, default={})
        for k, v in props.items():
            if not isinstance(v, str):
                f.fail("properties", f"value of {k!r} is {v!r}, not a string")
        parent = f.uuid("parent", nullable=True) if "parent" in f.data else None
        in_image = f.take("uuid_in_image", bool, default=True)
        f.done()
        if parent is not None and device != "hdd":
            raise MediaError(f"{path}: field {where}.parent: only hard disks have parents")
        if fmt != ISCSI_FORMAT:
            location = os.path.normpath(location)
        return Medium(uuid, location, device, fmt, mtype, autoreset,
                      description, props, parent, in_image)

    def _check_no_loop(self, m):
        seen, at = set(), m
        while at.parent is not None:
            if at.uuid in seen:
                raise MediaError(f"{self.path}: the parents of {m.location} form a loop")
            seen.add(at.uuid)
            at = self.media[at.parent]

    def to_json(self):
        data = {"schema": SCHEMA, "kind": REGISTRY_KIND}
        for device, section in SECTIONS.items():
            data[section] = [m.to_json() for m in self.media.values() if m.device == device]
        return data

    def save(self):
        write_json_atomic(self.path, self.to_json())
        self.dirty = False

    @classmethod
    @contextlib.contextmanager
    def transaction(cls, home=None, users=None):
        home = os.path.abspath(home or default_home())
        with home_lock(home):
            reg = cls.load(home, users)
            yield reg
            if reg.dirty:
                reg.save()

    # -- look-up --------------------------------------------------------------------

    def get(self, uuid):
        return self.media.get(canonical_uuid(uuid))

    def by_location(self, path):
        if not str(path).startswith(ISCSI_SCHEME):
            path = os.path.normpath(os.path.abspath(path))
        for m in self.media.values():
            if m.location == path:
                return m
        return None

    def find(self, ref, device=None):
        """A medium by UUID, location, or file name; MediaError when unknown or ambiguous."""
        ref = str(ref)
        found = None
        if looks_like_uuid(ref):
            found = self.media.get(canonical_uuid(ref))
        if found is None:
            found = self.by_location(ref)
        if found is None and os.sep not in ref:
            named = [m for m in self.media.values() if m.name == ref and
                     (device is None or m.device == device)]
            if len(named) > 1:
                raise MediaError(f"{ref!r} names {len(named)} media "
                                 f"({', '.join(m.location for m in named)}): give the UUID")
            found = named[0] if named else None
        if found is None or device is not None and found.device != device:
            what = DEVICE_WORDS.get(device, "medium")
            raise MediaError(f"Could not find a registered {what} {ref!r} in {self.path}")
        return found

    def search(self, text):
        """Media whose UUID starts with ``text`` or whose file name contains it."""
        needle = text.lower().strip("{}")
        return [m for m in self.media.values()
                if m.uuid.startswith(needle) or needle in m.name.lower()]

    def children(self, uuid):
        uuid = canonical_uuid(uuid)
        return [m for m in self.media.values() if m.parent == uuid]

    def descendants(self, uuid):
        out = []
        for c in self.children(uuid):
            out.append(c)
            out.extend(self.descendants(c.uuid))
        return out

    def base_of(self, uuid):
        m = self.media[canonical_uuid(uuid)]
        while m.parent is not None:
            m = self.media[m.parent]
        return m

    def chain(self, uuid):
        """The medium and its ancestors, top first."""
        out = [self.media[canonical_uuid(uuid)]]
        while out[-1].parent is not None:
            out.append(self.media[out[-1].parent])
        return out

    def effective_type(self, uuid):
        """A differencing image acts with the write mode of its base (VirtualBox:
        the base's type governs the whole tree)."""
        return self.base_of(uuid).type

    def resolver(self, parent_uuid, locator, child_path):
        """open_chain's resolver: a parent found by UUID in this registry."""
        if parent_uuid in (None, NULL_UUID):
            child = self.by_location(child_path)
            if child is not None and child.parent is not None:
                return self.media[child.parent].open_location
            return None
        m = self.media.get(str(parent_uuid))
        if m is not None:
            return m.open_location
        child = self.by_location(child_path)
        if child is not None and child.parent is not None:
            return self.media[child.parent].open_location
        return None

    def open_chain(self, uuid, writable=False):
        m = self.media[canonical_uuid(uuid)]
        return open_chain(m.open_location, writable=writable, format=m.format,
                          resolver=self.resolver)

    def tree(self):
        """``[(medium, depth)]`` for every hard disk, parents before children."""
        out = []

        def walk(m, depth):
            out.append((m, depth))
            for c in sorted(self.children(m.uuid), key=lambda c: c.location):
                walk(c, depth + 1)
        for m in sorted((m for m in self.media.values() if m.parent is None),
                        key=lambda m: (m.device, m.location)):
            walk(m, 0)
        return out

    # -- adding ---------------------------------------------------------------------

    def _duplicate(self, device, location, uuid, other):
        word = DEVICE_WORDS[device]
        return MediaError(
            f"Cannot register the {word} '{location}' {{{uuid}}} because a {DEVICE_WORDS[other.device]} "
            f"'{other.location}' with UUID {{{uuid}}} already exists.  A copy of an image "
            f"made by copying the file keeps the original's UUID: make copies with "
            f"'drivebay clonemedium' (or 'drivebay media copy'), which gives the copy a new "
            f"UUID")

    def add(self, path, device="hdd", format=None, type=None, uuid=None):
        """Register an existing image (idempotent for a location already known).

        A differencing image's parent is registered first when it is found
        (the registry, then the locator the image stores, then the folder)."""
        if device not in DEVICE_TYPES:
            raise MediaError(f"unknown device type {device!r} (hdd, dvd or floppy)")
        location = os.path.normpath(os.path.abspath(path))
        known = self.by_location(location)
        if not os.path.isfile(location):
            raise MediaError(f"Could not find file for the medium '{location}' "
                             f"(VERR_FILE_NOT_FOUND)")
        if device == "hdd":
            fmt, file_uuid, parent_uuid, _size, _variant = _image_facts(location, format)
        else:
            fmt, file_uuid, parent_uuid = self._removable_facts(location, device), None, None
        if known is not None:
            if known.device != device:
                raise MediaError(f"{location} is already registered as a "
                                 f"{DEVICE_WORDS[known.device]}")
            if known.uuid_in_image and file_uuid is not None and file_uuid != known.uuid:
                raise MediaError(f"{location}: the registry ({self.path}) records UUID "
                                 f"{known.uuid} but the image now has {file_uuid}: the file "
                                 f"was replaced; close the old medium first")
            return known
        if file_uuid is not None and uuid is not None and canonical_uuid(uuid) != file_uuid:
            raise MediaError(f"{location}: the image has UUID {file_uuid}, not {uuid}")
        new_uuid = file_uuid or (canonical_uuid(uuid) if uuid else str(uuidlib.uuid4()))
        other = self.media.get(new_uuid)
        if other is not None:
            raise self._duplicate(device, location, new_uuid, other)
        parent = None
        if parent_uuid is not None:
            parent = self.media.get(parent_uuid)
            if parent is None:
                parent = self._find_parent(location, fmt)
            if parent.uuid != parent_uuid and parent.uuid_in_image:
                raise MediaError(f"{location}: records parent UUID {parent_uuid} but the "
                                 f"parent found ({parent.location}) has {parent.uuid}")
        mtype = type or ("readonly" if device == "dvd" else "normal")
        if mtype not in ALLOWED_TYPES[device]:
            raise MediaError(f"{location}: type {mtype!r} is not allowed for a "
                             f"{DEVICE_WORDS[device]} ({', '.join(ALLOWED_TYPES[device])})")
        m = Medium(new_uuid, location, device, fmt, "normal" if parent else mtype,
                   parent=parent.uuid if parent else None, uuid_in_image=file_uuid is not None)
        self.media[m.uuid] = m
        self.dirty = True
        if type is not None and parent is None and mtype != "normal":
            self.set_type(m.uuid, mtype)
        return m

    def add_iscsi(self, server, target, lun=0, port=None, username=None, password=None,
                  initiator=None):
        """Register a LUN of an iSCSI target as a hard disk (VBoxManage
        storageattach --medium iscsi does this).  As VirtualBox does, the
        medium gets a new UUID (a LUN carries none) and keeps the target and
        the CHAP account in its properties; its location is the LUN's URL
        without the password (iscsi://server:port/target/lun).  The same LUN
        registered again is the same medium."""
        host = server.strip()
        if host.count(":") == 1:                     # VirtualBox: --server host:port
            host, _, given = host.partition(":")
            port = port or given
        if not host or not target:
            raise MediaError("an iSCSI medium needs --server and --target")
        try:
            port = int(port) if port else ISCSI_PORT
            lun = int(lun)
        except ValueError:
            raise MediaError(f"iSCSI: the port {port!r} and LUN {lun!r} must be numbers") \
                from None
        if not 0 < port < 65536 or not 0 <= lun <= 16383:
            raise MediaError(f"iSCSI: port {port} (1-65535) or LUN {lun} (0-16383) out of range")
        if (username is None) != (password is None):
            raise MediaError("iSCSI: CHAP needs both --username and --password")
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        location = f"{ISCSI_SCHEME}{hostport}/{target}/{lun}"
        props = {"TargetAddress": hostport, "TargetName": target, "LUN": str(lun)}
        if initiator:
            props["InitiatorName"] = initiator
        if username is not None:
            props.update(InitiatorUsername=username, InitiatorSecret=password)
        known = self.by_location(location)
        if known is not None:
            known.properties.update(props)
            self.dirty = True
            return known
        m = Medium(str(uuidlib.uuid4()), location, "hdd", ISCSI_FORMAT, "normal",
                   properties=props, uuid_in_image=False)
        self.media[m.uuid] = m
        self.dirty = True
        return m

    def _find_parent(self, location, fmt):
        from drivebay.block.chain import parent_path
        with open_image(location, format=fmt) as child:
            try:
                where = parent_path(child, self.resolver)
            except DrivebayError as e:
                raise MediaError(f"Parent medium with UUID {child.parent_uuid} of the medium "
                                 f"'{location}' is not found in the media registry "
                                 f"({self.path}) nor beside the image: {e}") from None
        return self.add(where, "hdd")

    @staticmethod
    def _removable_facts(location, device):
        size = os.path.getsize(location)
        if device == "floppy":
            if size > MAX_FLOPPY_SIZE:
                raise MediaError(f"{location}: {size} bytes is larger than the largest floppy "
                                 f"image ({MAX_FLOPPY_SIZE} bytes)")
            return "raw"
        with open(location, "rb") as f:
            if f.read(len(VISO_MARKER)) == VISO_MARKER:
                return "viso"
            f.seek(ISO_PVD_OFFSET)
            return "iso" if f.read(5) == ISO_STANDARD_ID else "raw"

    def create_hdd(self, path, size, format="vdi", variant="dynamic", type="normal",
                   description="", uuid=None):
        """Create a base hard disk image and register it."""
        location = os.path.normpath(os.path.abspath(path))
        if os.path.exists(location):
            raise MediaError(f"Could not create the medium storage unit '{location}': "
                             f"the file already exists (VERR_ALREADY_EXISTS)")
        cls = driver_for(format)
        if variant not in cls.create_variants:
            raise MediaError(f"{location}: format {format} cannot create {variant!r} images "
                             f"({', '.join(cls.create_variants) or 'none'})")
        os.makedirs(os.path.dirname(location), exist_ok=True)
        cls.create(location, size, variant=variant, uuid=uuid)
        try:
            m = self.add(location, "hdd", format=format)
            m.description = description
            if type != "normal":
                self.set_type(m.uuid, type)
        except BaseException:
            self.media = {k: v for k, v in self.media.items() if v.location != location}
            os.unlink(location)
            raise
        return m

    def create_diff(self, parent_uuid, path=None, format=None, uuid=None):
        """A new empty differencing image over ``parent_uuid``, registered.

        Its format is the parent's when that format has differencing images,
        otherwise VDI (which names the parent by the UUID kept here)."""
        parent = self.media[canonical_uuid(parent_uuid)]
        if parent.device != "hdd":
            raise MediaError(f"{parent.location}: only hard disks have differencing images")
        fmt = format or parent.format
        cls = driver_for(fmt)
        if not cls.supports_backing:
            fmt, cls = "vdi", driver_for("vdi")
        new_uuid = canonical_uuid(uuid) if uuid else str(uuidlib.uuid4())
        location = os.path.normpath(os.path.abspath(
            path or os.path.join(os.path.dirname(parent.location), f"{{{new_uuid}}}.{fmt}")))
        if os.path.exists(location):
            raise MediaError(f"{location}: already exists; refusing to overwrite it")
        os.makedirs(os.path.dirname(location), exist_ok=True)
        with open_image(parent.open_location, format=parent.format) as image:
            if image.uuid in (None, NULL_UUID):
                image.uuid = uuidlib.UUID(parent.uuid)      # raw: the registry's UUID links
            cls.create(location, None if fmt == "vhd" else image.size, variant="dynamic",
                       uuid=uuidlib.UUID(new_uuid), parent=image)
        m = Medium(new_uuid, location, "hdd", fmt, "normal", parent=parent.uuid)
        self.media[new_uuid] = m
        self.dirty = True
        return m

    def reset_diff(self, uuid):
        """Empty a differencing image, keeping its UUID and location (the
        immutable reset): a fresh image is made beside it and renamed over it."""
        m = self.media[canonical_uuid(uuid)]
        if m.parent is None:
            raise MediaError(f"{m.location}: only a differencing image can be reset")
        parent = self.media[m.parent]
        tmp = m.location + ".reset-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cls = driver_for(m.format)
        with open_image(parent.open_location, format=parent.format) as image:
            if image.uuid in (None, NULL_UUID):
                image.uuid = uuidlib.UUID(parent.uuid)
            cls.create(tmp, None if m.format == "vhd" else image.size, variant="dynamic",
                       uuid=uuidlib.UUID(m.uuid), parent=image)
        os.replace(tmp, m.location)

    # -- properties -------------------------------------------------------------------

    def set_type(self, uuid, mtype):
        """Change the write mode, with VirtualBox's refusals."""
        m = self.media[canonical_uuid(uuid)]
        if mtype not in MEDIUM_TYPES:
            raise MediaError(f"unknown medium type {mtype!r} ({', '.join(MEDIUM_TYPES)})")
        if mtype == m.type:
            return m
        if mtype not in ALLOWED_TYPES[m.device]:
            raise MediaError(f"Cannot change the type of {DEVICE_WORDS[m.device]} "
                             f"'{m.location}' to '{mtype}' (allowed: "
                             f"{', '.join(ALLOWED_TYPES[m.device])})")
        if m.parent is not None:
            raise MediaError(f"Cannot change the type of medium '{m.location}' because it is "
                             f"a differencing medium")
        kids = self.children(m.uuid)
        if kids:
            raise MediaError(f"Cannot change the type of medium '{m.location}' since it has "
                             f"{len(kids)} child media")
        running = self.users.running(m.uuid)
        if running:
            raise MediaError(f"Cannot change the type of medium '{m.location}': it is in use "
                             f"by the running VM(s) {', '.join(running)}")
        if mtype in ("normal", "writethrough", "immutable"):
            vms = {u[1] for u in self.users.users(m.uuid)}
            if len(vms) > 1 and mtype != "immutable":
                raise MediaError(f"Cannot change the type of medium '{m.location}' to "
                                 f"'{mtype}' since it is attached to more than one virtual "
                                 f"machine")
        if mtype == "shareable" and m.device == "hdd":
            variant = _image_facts(m.location, m.format)[4]
            if variant not in ("fixed", "raw"):
                raise MediaError(f"Cannot change type for medium '{m.location}' to "
                                 f"'Shareable' since it is a dynamic medium storage unit "
                                 f"(only fixed-size images can be shared)")
        m.type = mtype
        self.dirty = True
        return m

    def set_autoreset(self, uuid, on):
        """The flag lives on the immutable base; giving one of its differencing
        images sets the base's."""
        m = self.base_of(uuid)
        if m.type != "immutable":
            raise MediaError(f"Cannot modify the auto-reset property of '{m.location}': "
                             f"the medium is not immutable")
        m.autoreset = bool(on)
        self.dirty = True

    def set_description(self, uuid, text):
        m = self.media[canonical_uuid(uuid)]
        m.description = text
        self.dirty = True

    def set_property(self, uuid, name, value):
        m = self.media[canonical_uuid(uuid)]
        if not name:
            raise MediaError("a property needs a name")
        if value is None:
            if name not in m.properties:
                raise MediaError(f"{m.location}: no property {name!r}")
            del m.properties[name]
        else:
            m.properties[name] = str(value)
        self.dirty = True

    def info(self, uuid):
        """Everything ``showmediuminfo`` prints, as a dict."""
        m = self.media[canonical_uuid(uuid)]
        out = {"uuid": m.uuid, "parent": m.parent, "device": m.device, "location": m.location,
               "format": m.format, "type": m.type, "base_type": self.effective_type(m.uuid),
               "autoreset": m.autoreset, "description": m.description,
               "properties": {k: "***" if k in ISCSI_SECRETS else v
                              for k, v in m.properties.items()}, "state": "created",
               "children": [c.uuid for c in self.children(m.uuid)],
               "in_use_by": [{"vm": n, "uuid": u, "where": w}
                             for n, u, w in self.users.users(m.uuid)]}
        if not m.accessible:
            out["state"] = "inaccessible"
            return out
        if not m.is_network:
            out["actual_size"] = os.stat(m.location).st_blocks * 512
        if m.device == "hdd":
            try:
                fmt, _uuid, _parent, size, variant = _image_facts(m.open_location, m.format)
                if m.is_network:
                    out["actual_size"] = size
                out.update(capacity=size, variant=variant)
            except DrivebayError as e:
                out.update(state="inaccessible", error=str(e))
        else:
            out["capacity"] = os.path.getsize(m.location)
        return out

    def refresh(self):
        """Re-read every image: ``{uuid: problem}`` for the inaccessible ones."""
        problems = {}
        for m in self.media.values():
            if not m.accessible:
                problems[m.uuid] = f"{m.location}: file not found"
                continue
            if m.device != "hdd":
                continue
            try:
                fmt, file_uuid, parent, _size, _variant = _image_facts(m.open_location, m.format)
            except DrivebayError as e:
                problems[m.uuid] = str(e)
                continue
            if m.uuid_in_image and file_uuid != m.uuid:
                problems[m.uuid] = f"{m.location}: the image has UUID {file_uuid}, the " \
                                   f"registry {m.uuid}"
            elif parent != m.parent and not (parent and m.parent and
                                             not self.media[m.parent].uuid_in_image):
                problems[m.uuid] = f"{m.location}: the image names parent {parent}, the " \
                                   f"registry {m.parent}"
        return problems

    # -- copy, move, resize, compact, remove --------------------------------------------

    def copy(self, uuid, dest, format="vdi", variant="dynamic", progress=None):
        """A full copy of the medium's disk (its whole chain) as a new base image
        with a new UUID, registered."""
        src = self.media[canonical_uuid(uuid)]
        if src.device != "hdd":
            raise MediaError(f"{src.location}: only hard disks can be copied")
        location = os.path.normpath(os.path.abspath(dest))
        self.check_free_space(os.path.dirname(location), self.used_bytes(src.uuid),
                              f"copying {src.location}")
        with self.open_chain(src.uuid) as chain:
            convert(chain, location, format, variant=variant, progress=progress)
        return self.add(location, "hdd", format=format)

    def used_bytes(self, uuid):
        """Host bytes the medium's chain occupies (an upper bound for a copy)."""
        total = 0
        for m in self.chain(uuid):
            with contextlib.suppress(OSError):
                total += os.stat(m.location).st_blocks * 512
        return total

    @staticmethod
    def check_free_space(folder, needed, what):
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        free = shutil.disk_usage(folder or ".").free
        if needed > free:
            raise MediaError(f"{what}: needs up to {needed} bytes but {folder} has only "
                             f"{free} bytes free; nothing was changed")

    def move(self, uuid, dest):
        """Move the image file; the registry and every VM file that refers to it
        follow.  A hard link (or a copy on another file system) comes first and
        the old name goes last, so a killed process leaves a usable medium."""
        m = self.media[canonical_uuid(uuid)]
        m.require_file("move")
        running = self.users.running(m.uuid)
        if running:
            raise MediaError(f"Cannot move '{m.location}': in use by the running VM(s) "
                             f"{', '.join(running)}")
        target = os.path.normpath(os.path.abspath(dest))
        # VBoxManage modifymedium --move takes a folder or a file name; a
        # name without an extension that does not exist yet is a folder.
        if os.path.isdir(target) or str(dest).endswith(os.sep) or \
                not os.path.exists(target) and not os.path.splitext(target)[1]:
            target = os.path.join(target, m.name)
        if target == m.location:
            return m
        if os.path.exists(target):
            raise MediaError(f"Cannot move '{m.location}' to '{target}': the target exists")
        if self.by_location(target) is not None:
            raise MediaError(f"{target} is already a registered medium")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(m.location, target)
        except OSError:
            self.check_free_space(os.path.dirname(target), os.path.getsize(m.location),
                                  f"moving {m.location}")
            shutil.copy2(m.location, target)
        old = m.location
        m.location = target
        self.dirty = True
        for child in self.children(m.uuid):
            self._relink_child(child, m)
        self.save()
        self.users.relocate(m.uuid, target)
        os.unlink(old)
        return m

    def _relink_child(self, child, parent):
        """Children that store a parent path (VHD locators) are told the new one."""
        with contextlib.suppress(DrivebayError), open_image(child.location,
                                                          format=child.format) as image:
            if image.parent_locator:
                image.close()
                with open_image(child.location, writable=True, format=child.format) as w:
                    locator = os.path.relpath(parent.location,
                                              os.path.dirname(child.location))
                    w.set_parent(uuidlib.UUID(parent.uuid), locator, w.parent_modification_uuid)

    def set_location(self, uuid, new_location):
        """Record that the file now lives at ``new_location`` (it was moved by hand)."""
        m = self.media[canonical_uuid(uuid)]
        m.require_file("set the location of")
        target = os.path.normpath(os.path.abspath(new_location))
        if not os.path.isfile(target):
            raise MediaError(f"Could not find file for the medium '{target}'")
        if m.device == "hdd" and m.uuid_in_image:
            file_uuid = _image_facts(target, m.format)[1]
            if file_uuid != m.uuid:
                raise MediaError(f"{target}: has UUID {file_uuid}, not {m.uuid}: not the "
                                 f"same medium")
        m.location = target
        self.dirty = True
        self.users.relocate(m.uuid, target)
        return m

    def resize(self, uuid, new_size):
        m = self.media[canonical_uuid(uuid)]
        if m.device != "hdd":
            raise MediaError(f"{m.location}: only hard disks can be resized")
        if self.users.running(m.uuid):
            raise MediaError(f"Cannot resize '{m.location}': in use by a running VM")
        m.require_file("resize")
        with open_image(m.location, writable=True, format=m.format) as image:
            if new_size < image.size:
                raise MediaError(f"{m.location}: shrinking from {image.size} to {new_size} "
                                 f"bytes is not supported")
            image.resize(new_size)

    def compact(self, uuid, progress=None):
        m = self.media[canonical_uuid(uuid)]
        m.require_file("compact")
        with open_image(m.location, writable=True, format=m.format) as image:
            if not hasattr(image, "compact"):
                raise MediaError(f"{m.location}: {m.format} images cannot be compacted")
            image.compact(progress=progress)

    def merge_child_into_parent(self, child_uuid, progress=None):
        child = self.media[canonical_uuid(child_uuid)]
        merge_mod.merge_into_parent(child.location, resolver=self.resolver, progress=progress)

    def remove(self, uuid, delete=False):
        """Forget a medium (closemedium), optionally deleting its file."""
        m = self.media[canonical_uuid(uuid)]
        if delete:
            m.require_file("delete the storage of")
        kids = self.children(m.uuid)
        if kids:
            raise MediaError(f"Cannot close medium '{m.location}' because it has "
                             f"{len(kids)} child media")
        users = self.users.users(m.uuid)
        if users:
            vms = sorted({u[0] for u in users})
            raise MediaError(f"Cannot close medium '{m.location}' because it is still "
                             f"attached to {len(vms)} virtual machines ({', '.join(vms)})")
        del self.media[m.uuid]
        self.dirty = True
        if delete:
            self.save()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(m.location)
        return m

    def forget(self, uuid):
        """Drop an entry with no checks (the caller deleted or will delete it)."""
        self.media.pop(canonical_uuid(uuid), None)
        self.dirty = True

    def release(self, uuid):
        m = self.media[canonical_uuid(uuid)]
        running = self.users.running(m.uuid)
        if running:
            raise MediaError(f"Cannot release '{m.location}': in use by the running VM(s) "
                             f"{', '.join(running)}")
        return self.users.release(m.uuid)

    def clear_inaccessible(self):
        """Forget optical and floppy images whose file is gone (hard disks stay:
        their loss is worth a look)."""
        gone = [m for m in self.media.values() if m.device != "hdd" and not m.accessible]
        for m in gone:
            self.users.release(m.uuid)
            del self.media[m.uuid]
        if gone:
            self.dirty = True
        return gone
