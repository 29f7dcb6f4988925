#!/bin/sh
# build-image.sh: make a cairn stick image, or write one to a USB stick.
#
#   sudo ./build-image.sh                       asks what to build
#   sudo ./build-image.sh --output cairn.img --boot
#   sudo ./build-image.sh --target /dev/sdX     builds, then writes the stick
#
# Every question has a flag, so it runs unattended; see --help.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<'USAGE'
Usage: build-image.sh [options]

  --base debian|alpine     the base system (default debian)
  --output FILE            the image file to write (default cairn.img)
  --target DEVICE          also write the image to this USB stick (asks first)
  --size MiB               image size (default 4096; at least 1024)
  --user NAME              the user account (default cairn)
  --password PASSWORD      password of the user and root (default: asked on a
                           terminal; unattended or left empty, one is made up,
                           printed at the end and kept in OUTPUT.password,
                           readable by root only)
  --password-file FILE     the password, the file's first line
  --lock-accounts          no password: nobody can log in on a console
  --upper zram|tmpfs       where changes live while running (default zram)
  --encrypt                encrypt the data partition (LUKS2); every boot asks for
                           the passphrase (on a terminal it is asked here, twice)
  --passphrase-file FILE   with --encrypt: the passphrase, the file's first line
                           ('-': standard input); needed when nothing can be asked
  --kernel PACKAGE         kernel package (debian: default linux-image-amd64;
                           alpine: linux-lts (default) or linux-virt)
  --console screen|serial  where boot messages go (default screen)
  --mirror URL             debian archive (default: this machine's)
  --repository URL|DIR     alpine repository, a URL or a local directory;
                           repeat for more (default: main and community of
                           --release on Alpine's CDN)
  --release VERSION        alpine release of the default repositories (v3.20)
  --apk PATH               alpine: the apk-tools program (default: apk or
                           apk.static on PATH; Debian has none: pass
                           Alpine's apk.static)
  --apk-keys DIR           alpine: the repositories' signing keys
                           (default /etc/apk/keys)
  --cache DIR              package and root cache (default /var/cache/cairn-build)
  --boot                   boot the image in QEMU when it is built (cairn vm: what
                           the guest saves stays in the image, as on a stick)
  --uefi                   with --boot: boot through UEFI instead of BIOS
  --snapshot               with --boot: throw away what the guest writes
  --accel auto|kvm|tcg     with --boot: KVM, software emulation, or (auto) KVM
                           when a test guest runs under it
  --yes                    ask nothing; take the defaults for what is not given
  -h, --help               this text
USAGE
}

die() {
	echo "build-image.sh: $*" >&2
	exit 1
}

base=debian output=cairn.img target='' size=4096 user=cairn password='' password_set='' password_file='' lock_accounts=''
upper=zram encrypt='' passphrase_file='' snapshot='' accel=auto passphrase='' kernel='' console=screen mirror='' cache=/var/cache/cairn-build
boot='' uefi='' yes=''
# Alpine: repositories as lines (a URL or a path has no newline).
repositories='' release=v3.20 apk='' apk_keys=/etc/apk/keys
while [ $# -gt 0 ]; do
	case $1 in
	--base) base=${2:?--base needs a value}; shift ;;
	--output) output=${2:?--output needs a value}; shift ;;
	--target) target=${2:?--target needs a value}; shift ;;
	--size) size=${2:?--size needs a value}; shift ;;
	--user) user=${2:?--user needs a value}; shift ;;
	--password) password=${2?--password needs a value}; password_set=1; shift ;;
	--password-file) password_file=${2:?--password-file needs a value}; password_set=1; shift ;;
	--lock-accounts) lock_accounts=1; password_set=1 ;;
	--upper) upper=${2:?--upper needs a value}; shift ;;
	--encrypt) encrypt=1 ;;
	--passphrase-file) passphrase_file=${2:?--passphrase-file needs a value}; shift ;;
	--kernel) kernel=${2:?--kernel needs a value}; shift ;;
	--console) console=${2:?--console needs a value}; shift ;;
	--mirror) mirror=${2:?--mirror needs a value}; shift ;;
	--repository) repositories="$repositories${2:?--repository needs a value}
"; shift ;;
	--release) release=${2:?--release needs a value}; shift ;;
	--apk) apk=${2:?--apk needs a value}; shift ;;
	--apk-keys) apk_keys=${2:?--apk-keys needs a value}; shift ;;
	--cache) cache=${2:?--cache needs a value}; shift ;;
	--boot) boot=1 ;;
	--uefi) uefi=1 ;;
	--snapshot) snapshot=1 ;;
	--accel) accel=${2:?--accel needs a value}; shift ;;
	--yes) yes=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option $1" ;;
	esac
	shift
done

[ "$(id -u)" -eq 0 ] || die "run as root: building needs chroot, mounts and loop devices"
case $accel in auto | kvm | tcg) ;; *) die "--accel $accel is not auto, kvm or tcg" ;; esac

# Questions only on a terminal, and only for what no flag answered.
ask() { # ask VAR "question" default
	[ -z "$yes" ] && [ -t 0 ] || return 0
	printf '%s [%s]: ' "$2" "$3" >&2
	read -r _answer || _answer=
	[ -z "$_answer" ] || eval "$1=\$_answer"
}
ask base "Base system (debian or alpine)" "$base"
ask size "Image size in MiB" "$size"
ask user "User name" "$user"
ask upper "Keep changes in zram or tmpfs" "$upper"
if [ -z "$encrypt" ] && [ -z "$yes" ] && [ -t 0 ]; then
	printf 'Encrypt the data partition? [y/N]: ' >&2
	read -r _answer || _answer=
	case $_answer in y | Y | yes) encrypt=1 ;; esac
fi
if [ -z "$password_set" ] && [ -z "$yes" ] && [ -t 0 ]; then
	printf 'Password for %s and root (empty: one is made up and shown at the end): ' "$user" >&2
	stty -echo 2>/dev/null || true
	read -r password || password=
	stty echo 2>/dev/null || true
	echo >&2
fi

# ask_passphrase: twice, without echo, until both agree and it is not empty.
ask_passphrase() {
	while :; do
		printf 'Passphrase for the data partition: ' >&2
		stty -echo 2>/dev/null || true
		read -r passphrase || passphrase=
		printf '\nThe same again: ' >&2
		read -r _again || _again=
		stty echo 2>/dev/null || true
		echo >&2
		if [ -z "$passphrase" ]; then
			echo "The passphrase is empty; every boot needs it typed." >&2
		elif [ "$passphrase" != "$_again" ]; then
			echo "The two differ; once more." >&2
		else
			return 0
		fi
	done
}
# Settled before anything is installed, built or written.
if [ -n "$encrypt" ] && [ -z "$passphrase_file" ]; then
	if [ -n "$yes" ] || [ ! -t 0 ]; then
		die "--encrypt without a terminal to ask on needs --passphrase-file FILE (nothing was built)"
	fi
	ask_passphrase
fi
[ -z "$passphrase_file" ] || [ -n "$encrypt" ] || die "--passphrase-file is for an encrypted image: add --encrypt"
[ -z "$passphrase_file" ] || [ "$passphrase_file" = - ] || [ -r "$passphrase_file" ] ||
	die "cannot read the passphrase file $passphrase_file"

case $base in debian | alpine) ;; *) die "unknown base \"$base\": use debian or alpine" ;; esac
case $upper in zram | tmpfs) ;; *) die "--upper must be zram or tmpfs, not \"$upper\"" ;; esac
case $size in '' | *[!0-9]*) die "--size must be a number of MiB, not \"$size\"" ;; esac
[ "$size" -ge 1024 ] || die "--size $size MiB is too small: a stick needs at least 1024 MiB"
if [ -z "$kernel" ]; then
	case $base in debian) kernel=linux-image-amd64 ;; alpine) kernel=linux-lts ;; esac
fi

# A path given relative to where the script was started (cairn runs from the checkout).
absolute() {
	case $1 in /* | *://*) echo "$1" ;; *) echo "$PWD/$1" ;; esac
}
output=$(absolute "$output") cache=$(absolute "$cache")
[ -z "$passphrase_file" ] || [ "$passphrase_file" = - ] || passphrase_file=$(absolute "$passphrase_file")
[ -z "$password_file" ] || [ "$password_file" = - ] || password_file=$(absolute "$password_file")

# The alpine base needs apk-tools, trusted keys and a reachable repository:
# checked before anything is installed or written (cairn checks again).
check_alpine_sources() {
	[ -z "$apk" ] || apk=$(absolute "$apk")
	apk_keys=$(absolute "$apk_keys")
	_given=$repositories repositories=
	while IFS= read -r repo; do
		[ -z "$repo" ] || repositories="$repositories$(absolute "$repo")
"
	done <<REPOS
$_given
REPOS
	if [ -n "$apk" ]; then
		[ -x "$apk" ] || die "--apk $apk is not an executable file"
	elif ! command -v apk >/dev/null 2>&1 && ! command -v apk.static >/dev/null 2>&1; then
		die "the alpine base needs apk-tools, and this machine has none (Debian does not package it): take apk.static from Alpine's apk-tools-static package and pass --apk PATH"
	fi
	ls "$apk_keys"/*.pub >/dev/null 2>&1 ||
		die "no trusted Alpine keys in $apk_keys: pass --apk-keys DIR (Alpine's keys are in /etc/apk/keys on Alpine and in the alpine-keys package)"
	[ -n "$repositories" ] || repositories="https://dl-cdn.alpinelinux.org/alpine/$release/main
https://dl-cdn.alpinelinux.org/alpine/$release/community
"
	while IFS= read -r repo; do
		[ -n "$repo" ] || continue
		index="${repo%/}/x86_64/APKINDEX.tar.gz"
		case $repo in
		*://*)
			# Without wget or curl, cairn's own check (before it writes) is the one.
			if command -v wget >/dev/null 2>&1; then
				wget -q -T 20 --spider "$index" || die "the Alpine repository $repo is not reachable ($index)"
			elif command -v curl >/dev/null 2>&1; then
				curl -fsI -m 20 "$index" >/dev/null || die "the Alpine repository $repo is not reachable ($index)"
			fi
			;;
		*) [ -f "$index" ] || die "$repo is not an Alpine repository: $index is missing" ;;
		esac
	done <<REPOS
$repositories
REPOS
}
[ "$base" != alpine ] || check_alpine_sources

# A target device is checked before anything is built or written.
check_target() {
	[ -b "$target" ] || die "$target is not a block device"
	dev=$(readlink -f "$target")
	# This machine's own disk first: unmounting it is never the answer.
	rootdev=$(findmnt -nvo SOURCE / 2>/dev/null || true)
	rootdisk=$(lsblk -nso NAME,TYPE "$rootdev" 2>/dev/null | awk '$2 == "disk" {print $1}' | tail -n 1)
	if [ -n "$rootdisk" ] && [ "/dev/$rootdisk" = "$dev" ]; then
		die "$target is the disk this machine runs from (it holds / ): refusing to overwrite it; give the USB stick's device"
	fi
	system_mounts=$(lsblk -nro MOUNTPOINT "$dev" | grep -xE '/|/boot|/boot/efi|/usr|/var|/home|\[SWAP\]' || true)
	if [ -n "$system_mounts" ]; then
		die "$target holds this machine's own $(echo "$system_mounts" | tr '\n' ' ')(the disk it runs from): refusing to overwrite it; give the USB stick's device"
	fi
	if lsblk -nro MOUNTPOINT "$dev" | grep -q .; then
		die "$target is mounted (or has mounted partitions): unmount it first"
	fi
	if swapon --show=NAME --noheadings 2>/dev/null | grep -q "^$dev"; then
		die "$target is used as swap by this machine"
	fi
}
[ -z "$target" ] || check_target

# What the build needs on this machine.
install_tools() {
	if command -v apt-get >/dev/null 2>&1; then
		need=
		for t in mksquashfs:squashfs-tools mkfs.vfat:dosfstools mcopy:mtools \
			sfdisk:fdisk grub-mkimage:grub-common mkfs.ext4:e2fsprogs node:nodejs npm:npm \
			getfattr:attr openssl:openssl; do
			command -v "${t%%:*}" >/dev/null 2>&1 || need="$need ${t#*:}"
		done
		[ -d /usr/lib/grub/i386-pc ] || need="$need grub-pc-bin"
		[ -d /usr/lib/grub/x86_64-efi ] || need="$need grub-efi-amd64-bin"
		[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need="$need busybox-static"
		[ "$base" != debian ] || command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
		[ -z "$encrypt" ] || command -v cryptsetup >/dev/null 2>&1 || need="$need cryptsetup-bin"
		if [ -n "$boot" ]; then
			command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
			[ -z "$uefi" ] || [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need="$need ovmf"
		fi
		if [ -n "$need" ]; then
			echo "Installing:$need" >&2
			apt-get update -qq || die "apt-get update failed"
			# $need is a list of package names: split on purpose.
			# shellcheck disable=SC2086
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null ||
				die "could not install$need"
		fi
	elif command -v apk >/dev/null 2>&1; then
		# An Alpine machine bootstraps the alpine base with its own apk.
		# coreutils and util-linux: cairn uses options busybox's cp, dd and
		# lsblk lack (cp --reflink, dd oflag=seek_bytes, lsblk -o).
		debian_base=
		[ "$base" != debian ] || debian_base=1
		apk add --quiet squashfs-tools dosfstools mtools sfdisk grub grub-bios grub-efi e2fsprogs \
			nodejs npm attr busybox-static openssl coreutils util-linux e2fsprogs-extra ${boot:+qemu-system-x86_64} \
			${debian_base:+debootstrap} ${encrypt:+cryptsetup} ||
			die "could not install the build tools with apk"
	else
		die "this machine has neither apt-get nor apk: install the tools listed in README.md by hand"
	fi
}
install_tools

cd "$here"
# The command (dist/cairn.mjs) and the runtime it runs (dist/cairn.cjs), built together.
if [ ! -f dist/cairn.mjs ] || [ ! -f dist/cairn.cjs ] ||
	[ -n "$(find src initramfs openrc grub scripts -newer dist/cairn.cjs -type f 2>/dev/null | head -n 1)" ]; then
	echo "Building the cairn runtime" >&2
	[ -d node_modules ] || npm install --no-audit --no-fund >/dev/null || die "npm install failed"
	npm run --silent build >/dev/null || die "the runtime did not build"
fi

set -- image build --base "$base" --output "$output" --size "$size" --user "$user" --upper "$upper" \
	--kernel "$kernel" --console "$console" --cache "$cache"
[ -z "$password_file" ] || set -- "$@" --password-file "$password_file"
[ -z "$lock_accounts" ] || set -- "$@" --lock-accounts
if [ -n "$password" ]; then
	# In a root-only file: a password on cairn's command line is seen by every user of this machine.
	password_tmp=$(mktemp)
	trap 'rm -f "$password_tmp"' EXIT
	printf '%s\n' "$password" >"$password_tmp"
	set -- "$@" --password-file "$password_tmp"
fi
[ -z "$mirror" ] || set -- "$@" --mirror "$mirror"
if [ "$base" = alpine ]; then
	set -- "$@" --release "$release" --apk-keys "$apk_keys"
	[ -z "$apk" ] || set -- "$@" --apk "$apk"
	while IFS= read -r repo; do
		[ -z "$repo" ] || set -- "$@" --repository "$repo"
	done <<REPOS
$repositories
REPOS
fi
if [ -n "$passphrase" ]; then
	# Through a pipe: a passphrase on the command line is seen by every user of this machine.
	printf '%s\n' "$passphrase" | node dist/cairn.mjs "$@" --encrypt --passphrase-file - || die "the image was not built"
else
	[ -z "$encrypt" ] || set -- "$@" --encrypt --passphrase-file "$passphrase_file"
	node dist/cairn.mjs "$@" || die "the image was not built"
fi

if [ -n "$target" ]; then
	model=$(lsblk -dno MODEL "$dev" 2>/dev/null | sed 's/ *$//')
	bytes=$(lsblk -dbno SIZE "$dev")
	echo "About to overwrite $target: ${model:-unknown model}, $((bytes / 1048576)) MiB. Everything on it is lost." >&2
	[ -t 0 ] || die "writing a device needs a terminal to confirm on"
	printf 'Type the device name (%s) to go on: ' "$target" >&2
	read -r confirm || confirm=
	[ "$confirm" = "$target" ] || die "not confirmed: nothing written"
	dd if="$output" of="$dev" bs=4M conv=fsync status=progress
	sync
	echo "Written to $target." >&2
fi

if [ -n "$boot" ]; then
	exec node dist/cairn.mjs vm ${uefi:+--uefi} ${snapshot:+--snapshot} --accel "$accel" "$output"
fi
