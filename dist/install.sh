#!/bin/bash
# install.sh: install Weft on a host without Kubernetes, from a built tree.
#
#   make && sudo dist/install.sh
#
# Installs weftd and weft to $BINDIR, the flannel CNI plugin and its
# delegates to $CNI_BIN_DIR, weftd.service to $SYSTEMD_DIR, and, only where
# none exists yet, /etc/weft/weftd.env and the stock conflist
# /etc/cni/net.d/10-flannel.conflist (an existing one is left alone and the
# new one is put beside it with a .weft-new suffix). Every destination is
# under $DESTDIR, for packaging.
#
# Environment (defaults in brackets):
#   BIN          where the binaries were built            [<repo>/bin]
#   DESTDIR      staging root                             []
#   BINDIR       weftd, weft                              [/usr/local/bin]
#   CNI_BIN_DIR  flannel, bridge, host-local, portmap,    [/opt/cni/bin]
#                loopback
#   CNI_CONF_DIR the conflist                             [/etc/cni/net.d]
#   SYSTEMD_DIR  weftd.service                            [/etc/systemd/system]
#   CONF_DIR     weftd.env                                [/etc/weft]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${BIN:-$here/../bin}"
DESTDIR="${DESTDIR:-}"
BINDIR="${BINDIR:-/usr/local/bin}"
CNI_BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"
CNI_CONF_DIR="${CNI_CONF_DIR:-/etc/cni/net.d}"
SYSTEMD_DIR="${SYSTEMD_DIR:-/etc/systemd/system}"
CONF_DIR="${CONF_DIR:-/etc/weft}"

programs=(weftd weft)
plugins=(flannel bridge host-local portmap loopback)

missing=()
for f in "${programs[@]}" "${plugins[@]}"; do
	[ -f "$BIN/$f" ] || missing+=("$BIN/$f")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "install.sh: not built: ${missing[*]} (run make first, or set BIN)" >&2
	exit 1
fi

# install_config SRC DST: install a config file unless one is there already.
install_config() {
	if [ -e "$2" ]; then
		install -m 0644 "$1" "$2.weft-new"
		echo "kept $2; the shipped version is $2.weft-new"
	else
		install -m 0644 "$1" "$2"
		echo "installed $2"
	fi
}

install -d "$DESTDIR$BINDIR" "$DESTDIR$CNI_BIN_DIR" "$DESTDIR$CNI_CONF_DIR" \
	"$DESTDIR$SYSTEMD_DIR" "$DESTDIR$CONF_DIR"
for f in "${programs[@]}"; do
	install -m 0755 "$BIN/$f" "$DESTDIR$BINDIR/$f"
done
for f in "${plugins[@]}"; do
	install -m 0755 "$BIN/$f" "$DESTDIR$CNI_BIN_DIR/$f"
done
echo "installed ${programs[*]} to $DESTDIR$BINDIR and ${plugins[*]} to $DESTDIR$CNI_BIN_DIR"

# The unit names /usr/local/bin/weftd; follow BINDIR if it was moved.
sed "s|/usr/local/bin/weftd|$BINDIR/weftd|g; s|/etc/weft/weftd.env|$CONF_DIR/weftd.env|g" \
	"$here/systemd/weftd.service" >"$DESTDIR$SYSTEMD_DIR/weftd.service"
chmod 0644 "$DESTDIR$SYSTEMD_DIR/weftd.service"
echo "installed $DESTDIR$SYSTEMD_DIR/weftd.service"

install_config "$here/systemd/weftd.env" "$DESTDIR$CONF_DIR/weftd.env"
install_config "$here/cni/10-flannel.conflist" "$DESTDIR$CNI_CONF_DIR/10-flannel.conflist"

if [ -z "$DESTDIR" ]; then
	echo "next: edit $CONF_DIR/weftd.env, then: systemctl daemon-reload && systemctl enable --now weftd"
fi
