#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing. A no-op when all are
# present; a clear message when something is missing and we are not root.
set -euo pipefail

PACKAGES=(
  g++ make git
  libasio-dev            # standalone Asio (daemon)
  libflatbuffers-dev     # FlatBuffers library (description files, daemon protocol)
  flatbuffers-compiler   # flatc
  libmimalloc-dev        # host allocator
  libhwloc-dev           # host topology, NUMA binding
  doctest-dev            # tests
  libopenblas-dev        # dense products in functional mode
  clang libclang-rt-dev  # make fuzz: clang with libFuzzer (make test skips the fuzzer without them)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "make deps: missing Debian packages: ${missing[*]}" >&2
  echo "make deps: run 'make deps' as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "make deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
