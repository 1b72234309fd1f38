#!/usr/bin/env bash
# Library drift: run the fast tests against the oldest allowed versions ("floors": every `>=`
# in requirements.txt taken as `==`) or the newest releases the requirements allow ("latest").
#   bash tools/check_versions.sh floors     # or: latest
# torch stays at the build installed first (2.13.0, CPU) in both: a floor of torch would pull
# a multi-GB CUDA build. Results of the last runs are recorded in tests/README.md.
set -euo pipefail
mode=${1:?usage: check_versions.sh floors|latest}
cd "$(dirname "$0")/.."
venv=${DRIFT_VENV:-/tmp/poet-drift-$mode}
rm -rf "$venv" && python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q torch==2.13.0
case "$mode" in
  floors)
    # "pkg>=1.2,<2" -> "pkg==1.2"; torch keeps the build installed above.
    grep -Ev '^\s*(#|$)' requirements.txt | grep -v '^torch' \
      | sed -E 's/>=([^,;]+).*/==\1/' > "$venv/floors.txt"
    $pip install -q -r "$venv/floors.txt" ;;
  latest)
    # torch is left out: upgrading it here would pull the newest (possibly CUDA) build.
    grep -v '^torch' requirements.txt > "$venv/latest.txt"
    $pip install -q --upgrade -r "$venv/latest.txt" ;;
  *) echo "mode must be floors or latest" >&2; exit 2 ;;
esac
$pip list 2>/dev/null | grep -Ei '^(torch|transformers|tokenizers|peft|trl|datasets|accelerate|numpy|pandas|ipywidgets) '
"$venv/bin/python" -m pytest -q -m "not slow and not e2e" -p no:cacheprovider
