#!/usr/bin/env bash
# The whole test suite (what CI runs): creates or reuses .venv, then runs pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/system-deps.sh"
source "$root/scripts/env.sh"
cd "$root"
exec python -m pytest "$@"
