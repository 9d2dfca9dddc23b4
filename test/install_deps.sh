#!/usr/bin/env bash
# Install the Debian packages secretenv needs to build, test and run its demo.
# Runs as root; apt-get update is done once, and only when something is missing.
set -euo pipefail

packages=(
	build-essential
	postgresql-15
	postgresql-client-15
	postgresql-server-dev-15
	postgresql-15-pgaudit
	libssl-dev
	libipc-run-perl
	python3
	python3-psycopg2
	python3-cryptography
	clang
	libclang-rt-14-dev
	gdb
	procps
	debhelper
	dpkg-dev
	fakeroot
	postgresql-server-dev-all
	pgbouncer
	debootstrap
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${missing[@]}"
fi
