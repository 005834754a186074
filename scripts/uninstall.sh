#!/usr/bin/env bash
# Removes bmsd installed by scripts/install.sh. As root:
#
#   sudo scripts/uninstall.sh           # stop and remove the program and the unit; keep the
#                                       # config (/etc/bmsd/bmsd.toml), the state (/var/lib/bmsd:
#                                       # latched faults, fault journal, SOC) and the user
#   sudo scripts/uninstall.sh --purge   # also remove the config, the state and the user
#
# Stopping bmsd opens the contactors. Same settings as install.sh: PREFIX, CONFDIR, UNITDIR,
# BINDIR, ACCOUNTS_ROOT, and STATEDIR (/var/lib/bmsd) for --purge.
set -euo pipefail

PREFIX=${PREFIX:-/opt/bmsd}
CONFDIR=${CONFDIR:-/etc/bmsd}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BINDIR=${BINDIR:-/usr/local/bin}
STATEDIR=${STATEDIR:-/var/lib/bmsd}
ACCOUNTS_ROOT=${ACCOUNTS_ROOT:-/}
BMSD_USER=bmsd

say() { echo "uninstall: $*"; }
die() { echo "uninstall: $*" >&2; exit 1; }

purge=no
case "${1:-}" in
  "") ;;
  --purge) purge=yes ;;
  *) die "usage: $0 [--purge]" ;;
esac
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"

if [[ -d /run/systemd/system && $UNITDIR == /etc/systemd/system ]]; then
  if systemctl is-active --quiet bmsd.service; then
    say "stopping bmsd (the contactors open)"
    systemctl stop bmsd.service
  fi
  systemctl disable bmsd.service 2>/dev/null || true
fi
rm -f "$UNITDIR/bmsd.service"
if [[ -d /run/systemd/system && $UNITDIR == /etc/systemd/system ]]; then
  systemctl daemon-reload
fi

if [[ -L $BINDIR/bmsd && $(readlink "$BINDIR/bmsd") == "$PREFIX/"* ]]; then
  rm -f "$BINDIR/bmsd"
fi
for table in cells inverters limits protection protocols; do
  [[ -L $CONFDIR/$table ]] && rm -f "${CONFDIR:?}/$table"
done
rm -f "$CONFDIR/bmsd.toml.example"
rm -rf "${PREFIX:?}"
say "removed $PREFIX and the unit"

if [[ $purge == yes ]]; then
  rm -rf "${CONFDIR:?}" "${STATEDIR:?}"
  passwd_file=${ACCOUNTS_ROOT%/}/etc/passwd
  if grep -q "^$BMSD_USER:" "$passwd_file"; then
    account_args=()
    [[ $ACCOUNTS_ROOT != / ]] && account_args=(--prefix "$ACCOUNTS_ROOT")
    userdel "${account_args[@]}" "$BMSD_USER"
  fi
  say "purged $CONFDIR, $STATEDIR and the user $BMSD_USER"
else
  [[ -d $CONFDIR ]] && say "kept $CONFDIR (your config)"
  [[ -d $STATEDIR ]] && say "kept $STATEDIR (latched faults, fault journal, SOC)"
  say "kept the user $BMSD_USER; --purge removes these too"
fi
