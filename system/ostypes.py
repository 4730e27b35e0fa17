"""Guest OS types: the defaults a new VM gets, and which controllers the guest can drive.

The identifiers are VirtualBox's (``VBoxManage list ostypes``; the table in
Main/src-all/Global.cpp), so a user types the same ``--ostype`` in both.  The
defaults follow what VirtualBox applies to a new VM: memory and disk size
recommendations, the hard disk on SATA (AHCI) for current systems and on IDE
(PIIX4) for legacy ones, and a CD/DVD drive on the IDE secondary master.

``driver_warning`` says when the guest has no driver of its own for a
controller (the VirtualBox manual, "Hard Disk Controllers"): AHCI and LSI
Logic SAS need Windows Vista or later; Windows XP has no LSI Logic or
BusLogic driver; NVMe needs Windows 8.1 (Windows 7 with update KB2990941);
Windows ships no virtio-scsi driver; Linux before 3.3 has no NVMe driver and
before 3.4 no virtio-scsi.
"""

from dataclasses import dataclass

from drivebay.errors import ConfigError

GB = 1 << 30
MB = 1 << 20


@dataclass(frozen=True)
class OsType:
    id: str
    description: str
    family: str            # "Windows", "Linux", "BSD", "Solaris", "OS2", "DOS", "Other"
    version: float         # an order within the family: Windows NT version, Linux kernel
    is_64bit: bool
    memory_mb: int
    disk_size: int         # bytes
    disk_bus: str          # "sata" for current systems, "ide" for legacy ones

    @property
    def legacy(self):
        return self.disk_bus == "ide"


def _t(id, description, family, version, memory_mb, disk_gb, bus="sata"):
    return OsType(id, description, family, version, id.endswith("_64"), memory_mb,
                  int(disk_gb * GB), bus)


# Windows versions are the NT version numbers (Windows 9x sit below NT 4:
# they have the same lack of drivers), so "before Vista" is version < 6.0.
WIN_9X, WIN_NT4, WIN_2000, WIN_XP, WIN_2003 = 4.0, 4.01, 5.0, 5.1, 5.2
WIN_VISTA, WIN_7, WIN_8, WIN_81, WIN_10 = 6.0, 6.1, 6.2, 6.3, 10.0

_TABLE = [
    _t("Other", "Other/Unknown", "Other", 0, 64, 2, "ide"),
    _t("Other_64", "Other/Unknown (64-bit)", "Other", 0, 128, 2, "ide"),
    _t("DOS", "DOS", "DOS", 0, 32, 0.5, "ide"),
    _t("OS2Warp45", "OS/2 Warp 4.5", "OS2", 4.5, 128, 2, "ide"),
    _t("Windows31", "Windows 3.1", "Windows", 3.1, 32, 1, "ide"),
    _t("Windows95", "Windows 95", "Windows", WIN_9X, 64, 2, "ide"),
    _t("Windows98", "Windows 98", "Windows", WIN_9X, 64, 2, "ide"),
    _t("WindowsMe", "Windows ME", "Windows", WIN_9X, 128, 4, "ide"),
    _t("WindowsNT4", "Windows NT 4", "Windows", WIN_NT4, 128, 2, "ide"),
    _t("Windows2000", "Windows 2000", "Windows", WIN_2000, 168, 4, "ide"),
    _t("WindowsXP", "Windows XP (32-bit)", "Windows", WIN_XP, 192, 10, "ide"),
    _t("WindowsXP_64", "Windows XP (64-bit)", "Windows", WIN_XP, 512, 10, "ide"),
    _t("Windows2003", "Windows 2003 (32-bit)", "Windows", WIN_2003, 512, 20, "ide"),
    _t("Windows2003_64", "Windows 2003 (64-bit)", "Windows", WIN_2003, 512, 20, "ide"),
    _t("WindowsVista", "Windows Vista (32-bit)", "Windows", WIN_VISTA, 512, 25),
    _t("WindowsVista_64", "Windows Vista (64-bit)", "Windows", WIN_VISTA, 768, 25),
    _t("Windows2008", "Windows 2008 (32-bit)", "Windows", WIN_VISTA, 1024, 32),
    _t("Windows2008_64", "Windows 2008 (64-bit)", "Windows", WIN_VISTA, 2048, 32),
    _t("Windows7", "Windows 7 (32-bit)", "Windows", WIN_7, 1024, 32),
    _t("Windows7_64", "Windows 7 (64-bit)", "Windows", WIN_7, 2048, 32),
    _t("Windows8", "Windows 8 (32-bit)", "Windows", WIN_8, 1024, 32),
    _t("Windows8_64", "Windows 8 (64-bit)", "Windows", WIN_8, 2048, 32),
    _t("Windows81", "Windows 8.1 (32-bit)", "Windows", WIN_81, 1024, 32),
    _t("Windows81_64", "Windows 8.1 (64-bit)", "Windows", WIN_81, 2048, 32),
    _t("Windows2012_64", "Windows 2012 (64-bit)", "Windows", WIN_8, 2048, 32),
    _t("Windows10", "Windows 10 (32-bit)", "Windows", WIN_10, 1024, 32),
    _t("Windows10_64", "Windows 10 (64-bit)", "Windows", WIN_10, 2048, 50),
    _t("Windows2016_64", "Windows 2016 (64-bit)", "Windows", WIN_10, 2048, 50),
    _t("Windows2019_64", "Windows 2019 (64-bit)", "Windows", WIN_10, 2048, 50),
    _t("Windows2022_64", "Windows 2022 (64-bit)", "Windows", WIN_10, 2048, 50),
    _t("Windows11_64", "Windows 11 (64-bit)", "Windows", WIN_10, 4096, 80),
    _t("Linux22", "Linux 2.2", "Linux", 2.2, 64, 2, "ide"),
    _t("Linux24", "Linux 2.4 (32-bit)", "Linux", 2.4, 128, 2, "ide"),
    _t("Linux24_64", "Linux 2.4 (64-bit)", "Linux", 2.4, 128, 2, "ide"),
    _t("Linux26", "Linux 2.6 / 3.x / 4.x / 5.x (32-bit)", "Linux", 2.6, 256, 8),
    _t("Linux26_64", "Linux 2.6 / 3.x / 4.x / 5.x (64-bit)", "Linux", 2.6, 256, 8),
    _t("Linux", "Other Linux (32-bit)", "Linux", 5.0, 256, 8),
    _t("Linux_64", "Other Linux (64-bit)", "Linux", 5.0, 512, 8),
    _t("ArchLinux_64", "Arch Linux (64-bit)", "Linux", 6.0, 1024, 8),
    _t("Debian", "Debian (32-bit)", "Linux", 6.0, 1024, 20),
    _t("Debian_64", "Debian (64-bit)", "Linux", 6.0, 1024, 20),
    _t("Debian12_64", "Debian 12 Bookworm (64-bit)", "Linux", 6.1, 2048, 20),
    _t("Fedora_64", "Fedora (64-bit)", "Linux", 6.0, 2048, 25),
    _t("OpenSUSE_64", "openSUSE (64-bit)", "Linux", 6.0, 2048, 25),
    _t("RedHat_64", "Red Hat (64-bit)", "Linux", 5.14, 2048, 25),
    _t("Ubuntu", "Ubuntu (32-bit)", "Linux", 5.4, 1024, 25),
    _t("Ubuntu_64", "Ubuntu (64-bit)", "Linux", 6.0, 2048, 25),
    _t("FreeBSD_64", "FreeBSD (64-bit)", "BSD", 13.0, 1024, 16),
    _t("NetBSD_64", "NetBSD (64-bit)", "BSD", 9.0, 1024, 16),
    _t("OpenBSD_64", "OpenBSD (64-bit)", "BSD", 7.0, 1024, 16),
    _t("Solaris11_64", "Oracle Solaris 11 (64-bit)", "Solaris", 11.0, 2048, 32),
]
OS_TYPES = {t.id: t for t in _TABLE}
DEFAULT_OSTYPE = "Other"


def get(ostype_id):
    """The OS type by VirtualBox id (case-insensitive)."""
    if ostype_id in OS_TYPES:
        return OS_TYPES[ostype_id]
    for t in _TABLE:
        if t.id.lower() == str(ostype_id).lower():
            return t
    raise ConfigError(f"unknown guest OS type {ostype_id!r} (see 'drivebay list ostypes'; "
                      f"for example Ubuntu_64, Windows10_64, WindowsXP, DOS, Other)")


def driver_warning(ostype, controller):
    """Why the guest has no driver for ``controller`` (a chip name as in the VM
    file: PIIX4, IntelAhci, LsiLogic, BusLogic, LsiLogicSas, USB, NVMe,
    VirtIO, I82078), or None when it has one."""
    t = ostype if isinstance(ostype, OsType) else get(ostype)
    chip = controller.lower()
    if t.family == "Windows":
        if chip in ("intelahci", "lsilogicsas") and t.version < WIN_VISTA:
            return (f"{t.description} has no driver for {controller} (AHCI and SAS drivers "
                    f"ship from Windows Vista on): the guest will not see these disks "
                    f"without a vendor driver")
        if chip in ("lsilogic", "buslogic") and t.version == WIN_XP:
            return (f"{t.description} ships no {controller} SCSI driver: install one during "
                    f"setup (F6) or use IDE")
        if chip == "nvme" and t.version < WIN_81:
            if t.version == WIN_7:
                return (f"{t.description} needs update KB2990941 for NVMe; without it the "
                        f"guest has no NVMe driver")
            return f"{t.description} has no NVMe driver (Windows 8.1 is the first with one)"
        if chip == "virtio":
            return (f"Windows ships no virtio-scsi driver: {t.description} needs the "
                    f"virtio-win drivers")
    if t.family == "Linux":
        if chip == "nvme" and t.version < 3.3:
            return f"{t.description} has no NVMe driver (Linux 3.3 added it)"
        if chip == "virtio" and t.version < 3.4:
            return f"{t.description} has no virtio-scsi driver (Linux 3.4 added it)"
    if t.family in ("DOS", "OS2") and chip not in ("piix3", "piix4", "ich6", "i82078"):
        return f"{t.description} drives only IDE and floppy controllers through the BIOS"
    return None
