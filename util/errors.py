"""The exception tree shared by every layer.

Faults are split by who caused them: an image on disk (ImageError), the
user's configuration (ConfigError), the chain of images (ChainError), the
media registry (MediaError), a guest run that cannot continue
(GuestRunError).  A guest that programs a device wrongly never sees an
exception: devices answer with hardware status.  Our own bugs are asserts.
"""


class DrivebayError(Exception):
    """Root of every error drivebay raises on purpose."""


class ImageError(DrivebayError):
    """An image file could not be used."""


class FormatError(ImageError):
    """The file is not in the format it was opened as."""


class CorruptImageError(ImageError):
    """The file is in the format but a structure in it is inconsistent."""


class UnsupportedFeatureError(ImageError):
    """The image uses a feature of its format that drivebay does not implement."""


class ChainError(DrivebayError):
    """A differencing chain is broken (missing parent, UUID mismatch, loop)."""


class MediaError(DrivebayError):
    """The media registry refused an operation."""


class ConfigError(DrivebayError):
    """A VM or machine configuration is invalid."""


class UnsupportedOperation(DrivebayError):
    """The driver or device does not implement the requested operation."""


class LoaderError(DrivebayError):
    """A guest program file cannot be loaded (not ELF, wrong architecture...)."""


class GuestRunError(DrivebayError):
    """The guest run ended abnormally (triple fault, unmapped access, budget).

    ``address`` is the guest address (EIP or the faulting access) involved.
    """

    def __init__(self, message, address=None):
        super().__init__(message)
        self.address = address
