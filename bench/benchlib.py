"""What the benchmarks share: where their results go and how they are written.

Every script in bench/ is run as ``python bench/NAME.py`` (so this module is
importable beside them), prints its figures, and keeps them as JSON in
bench/results/ (not tracked by git) or where ``--out`` says.
"""

import json
import pathlib

RESULTS = pathlib.Path(__file__).parent / "results"


def default_out(name):
    """The default ``--out`` of the benchmark ``name``."""
    return str(RESULTS / f"{name}.json")


def save_results(path, data):
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
