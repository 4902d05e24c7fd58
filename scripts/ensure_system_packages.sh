#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, only when they are missing:
# mariadb-server (the MariaDB source server, run as our own process, never the system service),
# debootstrap (builds the MySQL 9.7 chroot), postgresql (Dagster's storage in the real-daemon
# fault scenarios, run as our own server process, never the system service), and chromium with
# chromium-driver (the browser test of the Dagster UI drives Debian's browser, so Selenium never
# downloads one).
#
# Arguments: the packages to ensure (default: all of them); `make demo` asks for mariadb-server
# only.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(mariadb-server debootstrap postgresql chromium chromium-driver)
wants() { [[ " ${wanted[*]} " == *" $1 "* ]]; }

missing=()
wants mariadb-server && ! command -v mariadbd >/dev/null && ! [ -x /usr/sbin/mariadbd ] && missing+=(mariadb-server)
wants debootstrap && ! command -v debootstrap >/dev/null && ! [ -x /usr/sbin/debootstrap ] && missing+=(debootstrap)
wants postgresql && ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && missing+=(postgresql)
wants chromium && ! [ -x /usr/bin/chromium ] && missing+=(chromium)
wants chromium-driver && ! [ -x /usr/bin/chromedriver ] && missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "ensure_system_packages: missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "ensure_system_packages: installing ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the packaged MariaDB and PostgreSQL services from starting: we run our own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$created_policy" = 1 ] && rm -f "$policy"
exit 0
