"""Trace events of the AHCI HBA, declared once (hw/nvme/trace-events style).

``EVENTS`` maps an event name, ``ahci_<action>[_<detail>]`` after the
function that emits it, to its category (util/trace.py's switches) and the
format of its fields.  Register accesses are traced by hw/ahci/regfile.py
from the register table; guest errors go through ``trace.guest_error``.
"""

from drivebay import trace

EVENTS = {
    "ahci_port_phase": ("dev", "{port} {old} -> {new}"),
    "ahci_port_irq": ("irq", "{port} PxIS +{bits}"),
    "ahci_hba_irq": ("irq", "{hba} interrupt {level} (IS={is_:#010x})"),
    "ahci_hba_reset": ("dev", "{hba} HBA reset"),
    "ahci_hba_legacy_write": ("dev", "{hba} legacy BAR{bar}+{offset:#x} <- {value:#x}: nothing decoded"),
    "ahci_link_up": ("dev", "{port} link up (Gen {speed}): COMINIT, PhyRdy"),
    "ahci_link_comreset": ("dev", "{port} COMRESET ({why})"),
    "ahci_drive_removed": ("dev", "{port} drive removed"),
    "ahci_cmd_issue": ("dev", "{port} slot {slot}: command {command:#04x} PRDTL={prdtl}{flags}"),
    "ahci_cmd_control": ("dev", "{port} slot {slot}: device control {control:#04x}{flags}"),
    "ahci_fis_d2h": ("dev", "{port} D2H FIS status={status:#04x} error={error:#04x}{irq}"),
    "ahci_fis_sdb": ("dev", "{port} SDB FIS SActive={tags:#010x} status={status:#04x} "
                            "error={error:#04x}; PxSACT now {sact:#010x}"),
    "ahci_fis_sdb_notification": ("dev", "{port} asynchronous notification: media event"),
}


def event(name, **fields):
    """Emit ``name`` with ``fields`` if its category is on."""
    category, fmt = EVENTS[name]
    if getattr(trace.on, category):
        trace.emit(category, f"{name} " + fmt.format(**fields))
