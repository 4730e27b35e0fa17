"""What a controller provides to the ATA devices attached to it.

The ATA/ATAPI command layer (hw/ata/device.py) is written once; a
controller plugs in by implementing ``AtaTransport``, as QEMU's IDE core is
served by IDEDMAOps (include/hw/ide/ide-dma.h).  IDE implements it with the
task file ports, the data port and bus-master DMA (hw/ide/); AHCI will
implement it with FISes and the PRDT: an AHCI port is a transport with one
device (unit 0).

The conversation, device -> transport (these methods) and transport ->
device (AtaDevice's public methods):

Registers
    The transport writes the host's register values into ``device.taskfile``
    (IDE: ``device.write_register`` per port write; AHCI: ``TaskFile.load``
    from a Register H2D FIS, both contents at once) and starts a command with
    ``device.execute(opcode)``.  It reads results back from
    ``device.taskfile`` (status, error, count, LBA) — IDE through the ports,
    AHCI into a D2H FIS.  ``device.read_status()`` is the host's Status read,
    which acknowledges INTRQ.

Interrupts
    ``intrq_changed(device)``: ``device.intrq`` (the device's INTRQ request,
    ATA/ATAPI-6 §5.2.9) may have changed.  IDE drives the channel's IRQ from
    the selected device, masked by nIEN; AHCI sends a FIS with the I bit.

PIO data
    ``pio_ready(device)``: a DRQ block is ready — ``device.pio_remaining``
    bytes in ``device.pio_direction`` (IN: to the host).  The transport moves
    it with ``device.pio_read(n)`` / ``device.pio_write(data)``; the block
    ends when its last byte has moved, and the device then goes on by itself
    (next block, status, interrupt).  IDE does nothing here: the guest moves
    the block through the data port.  AHCI sends a PIO Setup FIS and moves the
    block through the PRDT at once.  The command packet of PACKET is such a
    block (12 bytes, OUT; AHCI writes the ACMD area).

DMA
    ``dma_ready(device)``: the device is in its DMA data phase with
    ``device.dma_remaining`` bytes to move in ``device.dma_direction``.  The
    transport calls ``device.dma_run()`` whenever its engine can move data —
    at once (AHCI), or when the guest starts the bus master (IDE).
    ``dma_map(device, nbytes)``, called from ``dma_run``, returns writable
    views of guest memory covering at most ``nbytes`` of the transfer, in
    order: the next part of the scatter-gather list (IDE: PRD entries; AHCI:
    the PRDT).  An empty list means the list is exhausted before the transfer
    ends: the device stays in its DMA phase, waiting for ``dma_run`` again.
    ``None`` means a bus error (outside RAM, bus mastering off): the
    transport has recorded its own error status (IDE: BMIS.Error; AHCI:
    PxIS.HBFS) and the device ends the command with ABRT.
    ``dma_end(device, complete)``: the data phase is over, all bytes moved
    (``complete``) or not.

Completion
    ``command_done(device)``: the command has completed; the outputs are in
    the task file and INTRQ is already requested if the protocol asks for it
    (AHCI clears PxCI here).

Identity
    ``identify_words(device, words)``: the transport may patch the IDENTIFY
    words it owns (SATA: 75 queue depth, 76-79 Serial ATA capabilities).

Native Command Queuing (READ/WRITE FPDMA QUEUED; SATA only)
    ``queue_depth`` (0: the transport has no NCQ, and the commands abort)
    bounds the tags.  The device accepts a queued command by ending it with
    BSY clear and no INTRQ (``command_done``, as the Register D2H FIS with
    I = 0 of SATA), then runs it on its own: ``ncq_map(device, tag,
    nbytes)`` returns the guest-memory views of the tag's data buffer (AHCI:
    the PRDT of command slot ``tag``; None: the transport met a bus error or
    a table too short and recorded its own error status — the command is
    dropped); the media access goes to the BlockBackend asynchronously and
    completes in whatever order the backend delivers.  ``ncq_complete(device,
    tags, status, error)`` reports completed tags (a bit mask) with the
    status and error the Set Device Bits FIS carries; an error arrives with
    ``tags`` 0 and ERR in ``status``, after which the device has aborted every
    queued command until the host reads the NCQ Command Error log (READ LOG
    EXT page 10h).  ``sata_features(device)`` lists the SET FEATURES 10h/90h
    Count values (SATA features) the link supports.
"""


class AtaTransport:
    """The controller side of an ATA bus.  Every method has a do-nothing default."""

    def intrq_changed(self, device):
        """``device.intrq`` may have changed."""

    def pio_ready(self, device):
        """A PIO DRQ data block is ready to move."""

    def dma_ready(self, device):
        """The device waits for its DMA data phase to be run."""

    def dma_map(self, device, nbytes):
        """Views of guest memory for the next at most ``nbytes`` of the
        transfer; [] when the scatter-gather list is exhausted, None on a
        bus error."""
        return None

    def dma_end(self, device, complete):
        """The DMA data phase ended (``complete``: every byte moved)."""

    def command_done(self, device):
        """The command completed; its outputs are in ``device.taskfile``."""

    def identify_words(self, device, words):
        """Patch IDENTIFY words the transport owns (a list of 256 ints)."""

    #: NCQ tags the transport carries (SATA: 32); 0 = no NCQ.
    queue_depth = 0

    def ncq_map(self, device, tag, nbytes):
        """Views of guest memory for queued command ``tag``'s ``nbytes``, or
        None (error recorded by the transport; the command is dropped)."""
        return None

    def ncq_complete(self, device, tags, status, error):
        """Queued commands ``tags`` (bit mask) completed; ERR in ``status``
        reports a queued-command error (Set Device Bits FIS contents)."""

    def sata_features(self, device):
        """SET FEATURES 10h/90h Count values this link supports for ``device``."""
        return frozenset()
