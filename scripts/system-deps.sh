#!/usr/bin/env bash
# System packages the integration, browser and container tests need: PostgreSQL server binaries, headless
# Chromium, Debian's Docker Engine (dockerd, containerd, runc), debootstrap (the containers' base image) and
# Debian's docker-compose (1.29).
# Installs them with apt-get when missing and we are root; otherwise says what is missing (those tests skip).
set -uo pipefail
need=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)  # Debian's compose 1.29: tests/test_compose_up.py
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "persondet: installing system packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 \
    || echo "persondet: could not install ${need[*]}; the tests that need them will skip" >&2
else
  echo "persondet: missing system packages (${need[*]}); the tests that need them will skip" >&2
fi
