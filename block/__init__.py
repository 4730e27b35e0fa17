"""The host side: disk image formats, differencing chains and the I/O path."""
