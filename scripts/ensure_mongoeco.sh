#!/usr/bin/env bash
# Create (once) and cache a Python >= 3.13 venv that carries the `mongoeco` MongoDB wire server.
#
# mongoeco (Apache-2.0) matched MongoDB on every sink operation we measured, but it needs
# Python >= 3.13 while the project runs on 3.11 (see ../shared/FIELD-NOTES.md, "MongoDB"). So the
# server runs from its own venv, outside the repository, in CDC_MONGOECO_VENV (default
# ~/.cache/cdc_pipeline/mongoeco-venv); the tests' pymongo client stays on 3.11 and talks to it
# over TCP. The contract tests (cdc_pipeline_tests/contract) run this script, then start the server.
#
# Pinned: mongoeco[wire]==4.11.0 (the `wire` extra brings pymongo for its bson codec; pinned to the
# project's pymongo). Which interpreter: CDC_MONGOECO_PYTHON if set, else the first python3.15 /
# python3.14 / python3.13 on PATH, else the newest pyenv CPython >= 3.13 under $PYENV_ROOT
# (default ~/.pyenv). None found: one notice on stderr, exit 0, nothing done (the tests skip).
#
# Starting the server: mongoeco 4.11.0 has no console script and no `python -m` entry for its
# wire server; it is the class mongoeco.wire.proxy.AsyncMongoEcoProxyServer(engine=..., host=...,
# port=...) (its own pytest kit runs it in a thread the same way). With the in-memory engine
# (mongoeco.engines.memory.MemoryEngine, the default; data is lost when the process ends):
#
#   "$CDC_MONGOECO_VENV/bin/python" -c '
#   import asyncio, sys
#   from mongoeco.engines.memory import MemoryEngine
#   from mongoeco.wire.proxy import AsyncMongoEcoProxyServer
#   async def main(host, port):
#       proxy = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host=host, port=int(port))
#       await proxy.start()
#       print(proxy.address.uri, flush=True)
#       await asyncio.Event().wait()
#   asyncio.run(main(sys.argv[1], sys.argv[2]))' 127.0.0.1 PORT
#
# then connect with mongodb://127.0.0.1:PORT/?directConnection=true. It serves until killed
# (SIGTERM/SIGKILL). Optional keyword arguments: mongodb_dialect="7.0"|"8.0"|"9.0" (default
# "7.0"); SQLiteEngine(path) instead of MemoryEngine() for data on disk.
#
# Prints nothing on success. The build happens in a temporary folder renamed into place only
# after the server's modules import, so an interrupted build is never mistaken for a finished one.
set -euo pipefail

MONGOECO_SPEC="mongoeco[wire]==4.11.0"
PYMONGO_SPEC="pymongo==4.20.1"
stamp="$MONGOECO_SPEC $PYMONGO_SPEC"

venv="${CDC_MONGOECO_VENV:-$HOME/.cache/cdc_pipeline/mongoeco-venv}"

if [ -x "$venv/bin/python" ] && [ -f "$venv/.cdc_ready" ] \
  && [ "$(cat "$venv/.cdc_ready")" = "$stamp" ]; then
  exit 0
fi

is_313_or_newer() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate
  if [ -n "${CDC_MONGOECO_PYTHON:-}" ]; then
    if is_313_or_newer "$CDC_MONGOECO_PYTHON"; then
      echo "$CDC_MONGOECO_PYTHON"
      return 0
    fi
    return 1
  fi
  for candidate in python3.15 python3.14 python3.13; do
    if command -v "$candidate" >/dev/null && is_313_or_newer "$(command -v "$candidate")"; then
      command -v "$candidate"
      return 0
    fi
  done
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  if [ -d "$pyenv_root/versions" ]; then
    # Newest first: version folders sorted numerically (3.15.0, 3.14.2, 3.13.0, ...).
    while read -r candidate; do
      if [ -x "$candidate/bin/python3" ] && is_313_or_newer "$candidate/bin/python3"; then
        echo "$candidate/bin/python3"
        return 0
      fi
    done < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -name '3.*' | sort -rV)
  fi
  return 1
}

if ! python=$(find_python); then
  echo "ensure_mongoeco: no Python >= 3.13 found (set CDC_MONGOECO_PYTHON); the mongoeco backend is skipped." >&2
  exit 0
fi

parent=$(dirname "$venv")
mkdir -p "$parent"
# One builder at a time (parallel test sessions); the second one finds the venv ready.
exec 9>"$venv.lock"
if command -v flock >/dev/null; then
  flock 9
fi
if [ -x "$venv/bin/python" ] && [ -f "$venv/.cdc_ready" ] \
  && [ "$(cat "$venv/.cdc_ready")" = "$stamp" ]; then
  exit 0
fi

work="$venv.partial.$$"
log="$parent/mongoeco-venv.log"
rm -rf "$work"
trap 'rm -rf "$work"' EXIT

fail() {
  echo "ensure_mongoeco: $1; the last lines of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
}

"$python" -m venv "$work" >"$log" 2>&1 || fail "creating a venv with $python failed"
"$work/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  "$MONGOECO_SPEC" "$PYMONGO_SPEC" >>"$log" 2>&1 || fail "installing $MONGOECO_SPEC failed"
"$work/bin/python" -c \
  'import bson, mongoeco.engines.memory, mongoeco.wire.proxy' >>"$log" 2>&1 \
  || fail "the installed mongoeco does not import"
echo "$stamp" >"$work/.cdc_ready"
rm -rf "$venv"
mv -T "$work" "$venv"
trap - EXIT
