#!/usr/bin/env bash
# Installs or upgrades bmsd as a systemd service, from this source tree. As root:
#
#   sudo scripts/install.sh
#
# - a system user and group `bmsd` (no login, no home);
# - a new release under /opt/bmsd/releases/<time>: its own virtual environment with bmsd and its
#   dependencies (bmsd[systemd]), the shipped tables (etc/, dbc/) and the docs; /opt/bmsd/current
#   points at it (switched atomically; the previous release is kept for a rollback);
# - /etc/bmsd: bmsd.toml.example (always refreshed), bmsd.toml only if there is none (an
#   existing config is never touched), and links to the shipped tables of the current release;
# - /usr/local/bin/bmsd, a link to the current release's command line (bmsd faults, explain, ...);
# - the unit in /etc/systemd/system/bmsd.service; with systemd running: daemon-reload and
#   enable. It does not start or restart bmsd: a new install must be configured first, and an
#   upgrade takes effect at a restart you choose (the contactors open while bmsd restarts).
# State (/var/lib/bmsd) is created by systemd at the first start and never touched here.
#
# Settings (environment): PREFIX (/opt/bmsd), CONFDIR (/etc/bmsd), UNITDIR
# (/etc/systemd/system), BINDIR (/usr/local/bin), PYTHON (python3, >= 3.11), BMSD_PIP_ARGS
# (extra pip arguments, e.g. "--no-index --find-links /srv/wheels" on a gateway without
# internet), ACCOUNTS_ROOT (/; the root whose /etc/passwd gets the user, for staging and
# tests), KEEP_RELEASES (2). systemctl is only called when systemd runs and UNITDIR is
# /etc/systemd/system. Building systemd-python needs: apt-get install python3-venv python3-dev
# gcc pkg-config libsystemd-dev (or a wheel of it in BMSD_PIP_ARGS's --find-links).
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/bmsd}
CONFDIR=${CONFDIR:-/etc/bmsd}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BINDIR=${BINDIR:-/usr/local/bin}
PYTHON=${PYTHON:-python3}
ACCOUNTS_ROOT=${ACCOUNTS_ROOT:-/}
KEEP_RELEASES=${KEEP_RELEASES:-2}
BMSD_USER=bmsd
read -r -a PIP_ARGS <<<"${BMSD_PIP_ARGS:-}"

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
[[ -f $SOURCE/pyproject.toml && -f $SOURCE/systemd/bmsd.service ]] ||
  die "$SOURCE is not a bmsd source tree"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  die "bmsd needs Python >= 3.11 as $PYTHON (set PYTHON=...)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
  die "$PYTHON cannot create virtual environments: apt-get install python3-venv"

if [[ -z ${BMSD_PIP_ARGS:-} ]] && ! pkg-config --exists libsystemd 2>/dev/null; then
  die "systemd-python is built from source: apt-get install python3-dev gcc pkg-config libsystemd-dev"
fi

systemd_running() { [[ -d /run/systemd/system && $UNITDIR == /etc/systemd/system ]]; }

# --- the system user -------------------------------------------------------------------------
account_args=()
[[ $ACCOUNTS_ROOT != / ]] && account_args=(--prefix "$ACCOUNTS_ROOT")
passwd_file=${ACCOUNTS_ROOT%/}/etc/passwd
group_file=${ACCOUNTS_ROOT%/}/etc/group
if ! grep -q "^$BMSD_USER:" "$passwd_file"; then
  say "creating system user $BMSD_USER"
  useradd "${account_args[@]}" --system --user-group --no-create-home \
    --home-dir /var/lib/bmsd --shell /usr/sbin/nologin --comment "bmsd battery management" \
    "$BMSD_USER"
fi
gid=$(awk -F: -v name="$BMSD_USER" '$1 == name { print $3 }' "$group_file")
[[ -n $gid ]] || die "no group $BMSD_USER in $group_file"

# --- a new release ---------------------------------------------------------------------------
release=$PREFIX/releases/$(date -u +%Y%m%dT%H%M%SZ)
[[ -e $release ]] && die "$release exists already (two installs in one second?)"
mkdir -p "$PREFIX/releases"
build=$(mktemp -d)
# Until the switch below, a failure (or die) leaves no half-built release behind.
trap 'rm -rf "$release" "$build"' EXIT
say "building $release"
"$PYTHON" -m venv "$release/venv"
# A copy of the tree: pip builds in it, leaving the source checkout clean.
tar -C "$SOURCE" --exclude=__pycache__ --exclude='*.egg-info' --exclude=build \
  -cf - pyproject.toml README.md bmsd | tar -C "$build" -xf -
"$release/venv/bin/python" -m pip install -q "${PIP_ARGS[@]}" "$build[systemd]"
rm -rf "$build"
"$release/venv/bin/python" -c 'import systemd.daemon, systemd.journal, bmsd.app' ||
  die "the new environment does not import bmsd with systemd-python"
mkdir -p "$release/share/doc"
cp -r "$SOURCE/etc" "$SOURCE/dbc" "$release/share/"
cp "$SOURCE"/docs/*.md "$release/share/doc/"
# Check the shipped example against the code of this very release before switching to it.
"$release/venv/bin/bmsd" check-config "$release/share/etc/bmsd.toml" >/dev/null ||
  die "the shipped example config does not validate with this release"
trap 'rm -rf "$build"' EXIT

previous=$(readlink "$PREFIX/current" 2>/dev/null || true)
ln -sfn "$release" "$PREFIX/current.new"
mv -T "$PREFIX/current.new" "$PREFIX/current"
say "current release: $release${previous:+ (previous: $previous)}"

# Old releases beyond KEEP_RELEASES (never the current or the previous one).
mapfile -t releases < <(find "$PREFIX/releases" -mindepth 1 -maxdepth 1 -type d | sort)
excess=$((${#releases[@]} - KEEP_RELEASES))
for old in "${releases[@]:0:$((excess > 0 ? excess : 0))}"; do
  [[ $old == "$release" || $old == "$previous" ]] && continue
  say "removing old release $old"
  rm -rf "$old"
done

install -d "$BINDIR"
ln -sfn "$PREFIX/current/venv/bin/bmsd" "$BINDIR/bmsd"

# --- configuration ---------------------------------------------------------------------------
install -d -m 0750 -o root -g "$gid" "$CONFDIR"
install -m 0640 -o root -g "$gid" "$SOURCE/etc/bmsd.toml" "$CONFDIR/bmsd.toml.example"
if [[ -e $CONFDIR/bmsd.toml ]]; then
  say "keeping the existing $CONFDIR/bmsd.toml"
else
  install -m 0640 -o root -g "$gid" "$SOURCE/etc/bmsd.toml" "$CONFDIR/bmsd.toml"
  say "wrote $CONFDIR/bmsd.toml from the example: adapt it to the pack before starting"
fi
# The shipped tables follow the release; a directory put there by hand is left alone.
for table in cells inverters limits protection protocols; do
  link=$CONFDIR/$table
  if [[ -e $link && ! -L $link ]]; then
    say "keeping $link (not a link to the shipped tables)"
  else
    ln -sfn "$PREFIX/current/share/etc/$table" "$link"
  fi
done

# --- the unit --------------------------------------------------------------------------------
unit=$(mktemp)
sed -e "s|/opt/bmsd/|$PREFIX/|g" "$SOURCE/systemd/bmsd.service" >"$unit"
if [[ $CONFDIR != /etc/bmsd ]]; then
  sed -i -e "s|\${CONFIGURATION_DIRECTORY}/bmsd.toml|$CONFDIR/bmsd.toml|" "$unit"
fi
install -d "$UNITDIR"
install -m 0644 "$unit" "$UNITDIR/bmsd.service"
rm -f "$unit"
say "installed $UNITDIR/bmsd.service"

if systemd_running; then
  systemctl daemon-reload
  systemctl enable bmsd.service
  if systemctl is-active --quiet bmsd.service; then
    say "bmsd is running the previous release; restart it to use this one: systemctl restart bmsd"
  else
    say "next: edit $CONFDIR/bmsd.toml, check it (bmsd check-config), then: systemctl start bmsd"
  fi
else
  say "systemd is not running here: unit installed, not enabled"
fi
say "rollback: ln -sfn <a release in $PREFIX/releases> $PREFIX/current, then restart bmsd"
