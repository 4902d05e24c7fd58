#!/usr/bin/env bash
# Build (once) and cache a Debian unstable chroot that carries MySQL 9.7 LTS (mysql-server-core).
#
# MySQL 9.7 is not packaged for Debian 12, and there is no Docker engine on our machines, so the
# test fixtures run mysqld inside this chroot (see ../shared/FIELD-NOTES.md). The chroot lives
# outside the repository, in CDC_MYSQL_CHROOT (default ~/.cache/cdc_pipeline/mysql-9.7-root), so a
# second run costs nothing. The build is atomic: it happens in a temporary folder that is renamed
# into place only once mysqld answers --version, so an interrupted build is never mistaken for a
# finished one.
set -euo pipefail

root="${CDC_MYSQL_CHROOT:-$HOME/.cache/cdc_pipeline/mysql-9.7-root}"

if [ -x "$root/usr/sbin/mysqld" ] && [ -f "$root/.cdc_ready" ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure_mysql_chroot: building the MySQL 9.7 chroot needs root (debootstrap and chroot); run as root or set CDC_TEST_SOURCES=mariadb." >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  echo "ensure_mysql_chroot: debootstrap is missing; run 'make system-deps' (apt-get install debootstrap)." >&2
  exit 1
fi

parent=$(dirname "$root")
mkdir -p "$parent"
work="$root.partial.$$"
rm -rf "$work"
trap 'rm -rf "$work"' EXIT

echo "ensure_mysql_chroot: building $root with debootstrap (about a minute, once)..." >&2
debootstrap --variant=minbase --include=mysql-server-core sid "$work" >"$parent/debootstrap.log" 2>&1 || {
  echo "ensure_mysql_chroot: debootstrap failed; the last lines of $parent/debootstrap.log:" >&2
  tail -n 20 "$parent/debootstrap.log" >&2
  exit 1
}
mkdir -p "$work/var/lib" "$work/run/mysqld"
chroot "$work" /usr/sbin/mysqld --version >&2
touch "$work/.cdc_ready"
rm -rf "$root"
mv "$work" "$root"
trap - EXIT
echo "ensure_mysql_chroot: ready at $root" >&2
