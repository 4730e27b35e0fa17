"""VMs, snapshots, the ``drivebay`` command line and the mount tool."""
