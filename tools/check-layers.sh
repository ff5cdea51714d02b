#!/usr/bin/env bash
# Fails when a lower layer includes a higher one (docs/architecture.md, "Layers").
#   tools/check-layers.sh [ROOT]
# Order, lowest first: base (runtime/base) < device (runtime/device) < hardware
# (firmware-sim) < memory < interconnect < runtime < models < tools < tests.
# Also: memory, interconnect and models reach the hardware only through the device
# interface, never by including firmware-sim/ (a real driver replaces that folder).
set -euo pipefail
root=${1:-.}
cd "$root"

dirs=()
for d in runtime memory interconnect models firmware-sim tools tests; do
  [ -d "$d" ] && dirs+=("$d")
done

if grep -rnE --include='*.h' --include='*.hpp' --include='*.cpp' --include='*.cc' \
  '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "${dirs[@]}" 2>/dev/null |
awk '
function layer(path) {
  if (path ~ /^runtime\/base\//) return 0
  if (path ~ /^runtime\/device\//) return 1
  if (path ~ /^firmware-sim\//) return 2
  if (path ~ /^memory\//) return 3
  if (path ~ /^interconnect\//) return 4
  if (path ~ /^runtime\//) return 5
  if (path ~ /^models\//) return 6
  if (path ~ /^tools\//) return 7
  if (path ~ /^tests\//) return 8
  return -1
}
BEGIN {
  split("base device hardware memory interconnect runtime models tools tests", names, " ")
  bad = 0
}
{
  # grep -n output: file:line:text
  file = $0; sub(/:.*/, "", file)
  rest = substr($0, length(file) + 2)
  line = rest; sub(/:.*/, "", line)
  inc = rest; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
  from = layer(file); to = layer(inc)
  if (from < 0 || to < 0) next
  if (to > from) {
    printf "check-layers: %s:%s includes \"%s\": layer %s must not include the higher layer %s\n", file, line, inc, names[from + 1], names[to + 1]
    bad = 1
  } else if (to == 2 && (from == 3 || from == 4 || from == 6)) {
    printf "check-layers: %s:%s includes \"%s\": layer %s reaches the hardware only through runtime/device/\n", file, line, inc, names[from + 1]
    bad = 1
  }
}
END { exit bad }
'; then
  echo "check-layers: ok"
else
  exit 1
fi
