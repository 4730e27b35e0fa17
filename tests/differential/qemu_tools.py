"""Running the reference tools (qemu-img, qemu-io) from differential tests.

A missing tool fails the test (the test runner installs qemu-utils): the
oracles are never optional.
"""

import json
import shutil
import subprocess


def run(*args, ok=(0,)):
    """Run a tool; its exit code must be one of ``ok``."""
    tool = shutil.which(args[0])
    assert tool, f"{args[0]} is not installed: the differential tests need qemu-utils"
    r = subprocess.run([tool, *map(str, args[1:])], capture_output=True, text=True, timeout=60)
    assert r.returncode in ok, f"{' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def qemu_info(path, fmt):
    """``qemu-img info --output=json`` of ``path`` opened as ``fmt``."""
    return json.loads(run("qemu-img", "info", "-f", fmt, "--output=json", path).stdout)
