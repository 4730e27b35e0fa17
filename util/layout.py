"""On-disk and in-memory structures declared once, by field name.

A Layout is a named list of ``(field, struct-code)`` pairs with a fixed byte
order, its size checked when the module that declares it is imported.  Field
names are the spec's, so a grep against the spec finds them.

    VDI_HEADER = Layout("VDI header", "<", [("u32Signature", "I"), ...], size=400)
    hdr = VDI_HEADER.unpack(data)          # -> Record with attribute access
    data = VDI_HEADER.pack(hdr)            # or pack(dict)
"""

import struct


class Record(dict):
    """A decoded structure: a dict whose keys also read as attributes."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class Layout:
    def __init__(self, name, byte_order, fields, size=None):
        if byte_order not in "<>":
            raise ValueError("byte order must be '<' or '>'")
        self.name = name
        self.fields = tuple(f for f, _ in fields)
        self._struct = struct.Struct(byte_order + "".join(code for _, code in fields))
        self.size = self._struct.size
        if size is not None and size != self.size:
            raise AssertionError(f"{name}: declared size {size} but fields add up to {self.size}")
        offsets, at = {}, 0
        for field, code in fields:
            # struct with an explicit byte order never pads, so offsets add up.
            offsets[field] = at
            at += struct.calcsize(byte_order + code)
        self.offsets = offsets

    def assert_offsets(self, expected):
        """Check field offsets against numbers copied from the spec (at import)."""
        for name, offset in expected.items():
            if self.offsets[name] != offset:
                raise AssertionError(f"{self.name}: field {name} at {self.offsets[name]}, "
                                     f"the spec says {offset}")

    def unpack(self, data, offset=0):
        return Record(zip(self.fields, self._struct.unpack_from(data, offset)))

    def pack(self, values):
        return self._struct.pack(*(values[f] for f in self.fields))

    def pack_into(self, buffer, offset, values):
        self._struct.pack_into(buffer, offset, *(values[f] for f in self.fields))

    def defaults(self, **values):
        """A Record with every field zero (or b'') except those given."""
        rec = Record(zip(self.fields, self._struct.unpack(bytes(self.size))))
        for k, v in values.items():
            if k not in rec:
                raise KeyError(f"{self.name} has no field {k}")
            rec[k] = v
        return rec


def align_up(value, alignment):
    """``value`` rounded up to a multiple of ``alignment``."""
    return -(-value // alignment) * alignment


def field_error(exc, path, structure, name, value, expected):
    """An error naming the file, the structure, the field, what was found and
    what was expected (STYLE §8)."""
    return exc(f"{path}: {structure} field {name} is {value}; expected {expected}")
