#!/usr/bin/env bash
# An emulated Google Colab: what the notebooks' setup cell changes on Colab's runtime.
#   bash tools/colab_emulation.sh            # venv, install, the setup cell's install, 3 notebooks
#   NOTEBOOKS="" bash tools/colab_emulation.sh   # stop after the install and the report
# 1. builds a venv from Colab's preinstalled versions (tools/colab_packages.txt; torch is
#    linked from the interpreter running this script, see that file);
# 2. fakes the `google.colab` module, imported at start-up as on Colab (sitecustomize.py);
# 3. runs the setup cell's install (utils/env.py install_colab_requirements) and prints what it
#    added, upgraded and downgraded, and `pip check`'s conflicts;
# 4. runs 3 notebooks top to bottom in the tiny profile with that venv's kernel.
# Needs PyPI (a few hundred MB of wheels). The README's Colab section quotes its last report.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${COLAB_VENV:-/tmp/poet-colab}
notebooks=${NOTEBOOKS-02_tokenization 05_data_preparation 09_human_preference}
host=${HOST_PYTHON:-python3}
rm -rf "$venv" && "$host" -m venv "$venv"
py="$venv/bin/python"
pip="$py -m pip"
site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
host_site=$("$host" -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")

echo "== 1. Colab's packages (torch linked from $host_site)"
for item in "$host_site"/torch "$host_site"/torchgen "$host_site"/functorch "$host_site"/torch-*.dist-info; do
  [ -e "$item" ] && ln -s "$item" "$site/"
done
$pip install -q --upgrade pip
$pip install -q sympy networkx jinja2 filelock fsspec typing-extensions "setuptools>=77"  # torch's own requirements
$pip install -q -r tools/colab_packages.txt
$pip freeze | sort > "$venv/before.txt"

echo "== 2. a fake google.colab, imported at start-up as on Colab"
mkdir -p "$site/google/colab"
echo '"""Stand-in for Colab'"'"'s module: its presence is what utils.env.in_colab() checks."""' > "$site/google/colab/__init__.py"
echo "import google.colab  # noqa: F401  (Colab's kernel imports it at start-up)" > "$site/sitecustomize.py"

echo "== 3. the setup cell's install"
"$py" -c "from utils import env; assert env.in_colab(); print(' '.join(env.install_colab_requirements()[3:]))"
$pip freeze | sort > "$venv/after.txt"
"$py" - "$venv/before.txt" "$venv/after.txt" <<'PY'
import sys
from packaging.version import Version
def read(path):
    return dict(line.strip().split("==", 1) for line in open(path) if "==" in line)
before, after = read(sys.argv[1]), read(sys.argv[2])
for name in sorted(set(before) | set(after), key=str.lower):
    old, new = before.get(name), after.get(name)
    if old == new:
        continue
    if old is None:
        print(f"added      {name} {new}")
    elif new is None:
        print(f"removed    {name} {old}")
    else:
        major = Version(old).major != Version(new).major
        kind = "upgraded" if Version(new) > Version(old) else "DOWNGRADED"
        print(f"{kind:<10} {name} {old} -> {new}{'  (major version)' if major else ''}")
PY
echo "== pip check"
$pip check || true

for nb in $notebooks; do
  echo "== 4. notebook $nb (tiny profile)"
  POET_PROFILE=tiny POET_RUNS_DIR="$venv/runs" "$py" - "notebooks/$nb.ipynb" <<'PY'
import sys, time
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
print(f"ran {sys.argv[1]} in {time.perf_counter() - start:.0f} s")
PY
done
