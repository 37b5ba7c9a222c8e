#!/bin/sh
# Install every build and test dependency of metac from Debian's packages.
# Idempotent: quiet and quick when everything is already present.
set -eu

# Build: compiler, static archives of the libraries linked into ./metac.
BUILD="build-essential pkg-config libsodium-dev libsqlite3-dev libfuse3-dev zlib1g-dev libjpeg62-turbo-dev libxcb1-dev libxcb-shm0-dev libxcb-xtest0-dev libxcb-damage0-dev libxcb-xfixes0-dev libopus-dev libusb-1.0-0-dev libseccomp-dev"
# Tests: sanitizer and fuzzer runtimes, network namespaces, real peers.
TEST="clang libclang-rt-14-dev iproute2 procps psmisc socat openssh-client openssh-server diod sshfs fuse3 libnbd-bin qemu-utils nbdkit iputils-ping tcpdump iperf3 wireguard-go wireguard-tools busybox-static tmux qemu-system-x86 linux-image-cloud-amd64 groff-base systemd xvfb x11-utils x11-apps x11-xserver-utils xdotool tigervnc-viewer vncsnapshot gvncviewer x11vnc netpbm libjpeg-turbo-progs xclip pulseaudio pulseaudio-utils usbip linux-image-amd64"

missing=""
for p in $BUILD $TEST; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing; run this script as root" >&2
	exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
