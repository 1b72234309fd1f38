"""Run notebooks top to bottom in the tiny profile, as a class would; keep the executed copies.

    python tools/run_notebooks.py 05 06 07 08 12 13 [--out executed/] [--runs runs/]

The notebooks run in the order given, sharing one runs/ folder (08 reads what 06 and 07
trained), exactly as tests/test_notebooks.py runs them. Each executed copy is written to
--out with its outputs, and the wall times to --out/times.json: the course map's runtimes, and
the folder that tests/test_prose.py reads with POET_EXECUTED_NOTEBOOKS=--out to check that a
lesson's measured numbers are in its outputs. A notebook that fails is reported with its
error, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def notebook_path(prefix: str) -> Path:
    """notebooks/<prefix>_*.ipynb; SystemExit naming the choices when none or several match."""
    found = sorted((ROOT / "notebooks").glob(f"{prefix}_*.ipynb"))
    if len(found) != 1:
        names = ", ".join(p.name.split("_")[0] for p in sorted((ROOT / "notebooks").glob("*.ipynb")))
        raise SystemExit(f"error: {prefix!r} names {len(found)} notebooks; use one of: {names}")
    return found[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help="notebook numbers, e.g. 05 06 07")
    parser.add_argument("--out", default="runs/executed", help="where the executed copies go")
    parser.add_argument("--runs", default=None, help="the shared runs/ folder (default: runs/)")
    args = parser.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient

    paths = [notebook_path(p) for p in args.notebooks]  # every name checked before any run
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(POET_PROFILE="tiny", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false")
    if args.runs:
        os.environ["POET_RUNS_DIR"] = str(Path(args.runs).resolve())
    times, failed = {}, []
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            client.execute()
        except Exception as error:  # the notebook's own error; the copy shows where
            failed.append(path.name)
            print(f"{path.name}: FAILED\n{str(error)[-2000:]}", file=sys.stderr)
        times[path.name] = round(time.perf_counter() - start, 1)
        nbformat.write(nb, str(out / path.name))
        print(f"{path.name}: {times[path.name]:.0f} s -> {out / path.name}", flush=True)
    (out / "times.json").write_text(json.dumps(times, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
