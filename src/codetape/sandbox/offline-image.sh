#!/usr/bin/env bash
# Build a minimal Debian bookworm + python3 image without any container registry:
#   debootstrap --variant=minbase --include=python3[,PACKAGES] bookworm ROOTFS MIRROR
#   (trim ROOTFS)
#   tar -C ROOTFS -c . | docker import - NAME
#
# Usage: build-offline-image.sh [--force] [--include PKG,PKG...] [NAME]
#   NAME       image to create (default: $CODETAPE_IMAGE or codetape/python:bookworm)
#   --include  Debian packages to add (comma-separated, repeatable), such as
#              python3-numpy,python3-pil; an existing NAME that lacks one is rebuilt
#   --force    rebuild even if NAME already exists with every package asked for
# Environment:
#   DEBIAN_MIRROR  Debian mirror for debootstrap (default: the bookworm mirror from
#                  /etc/apt/sources.list*, else http://deb.debian.org/debian)
#   TMPDIR         where the temporary root filesystem is built (default /var/tmp)
#   DEBOOTSTRAP_CACHE  a folder that keeps the downloaded .deb files between builds
# Needs root, debootstrap and a running docker engine (scripts/start-dockerd.sh).
set -euo pipefail

SUITE=bookworm
DEFAULT_IMAGE=codetape/python:bookworm
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf '[build-offline-image] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }

force=0
name=""
include=()
add_include() {
    local pkg
    IFS=',' read -r -a pkgs <<<"$1"
    for pkg in "${pkgs[@]}"; do
        [[ -n "$pkg" ]] || continue
        # Debian's own rule for a package name: nothing here reaches a shell unquoted.
        [[ "$pkg" =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "--include: $pkg is not a Debian package name"
        [[ " ${include[*]} " == *" $pkg "* ]] || include+=("$pkg")
    done
}
while (($#)); do
    case "$1" in
        --force | -f) force=1 ;;
        --include) (($# > 1)) || die "--include needs a list of packages"; add_include "$2"; shift ;;
        --include=*) add_include "${1#--include=}" ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *)
            [[ -z "$name" ]] || die "only one image name may be given"
            name="$1"
            ;;
    esac
    shift
done
name="${name:-${CODETAPE_IMAGE:-$DEFAULT_IMAGE}}"

command -v docker >/dev/null 2>&1 || die "docker is not installed (apt-get install -y docker.io)"
timeout 15 docker info >/dev/null 2>&1 ||
    die "the docker engine is not answering (run scripts/start-dockerd.sh first)"

# The packages of include=() that image $1 lacks (dpkg's own record, read in a container).
missing_from() {
    local pkg status
    for pkg in "${include[@]}"; do
        status="$(docker run --rm --network none --entrypoint dpkg-query "$1" \
            -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == ii* ]] || printf '%s ' "$pkg"
    done
}

packages="python3${include[*]:+,$(IFS=,; echo "${include[*]}")}"
if docker image inspect "$name" >/dev/null 2>&1; then
    lacking="$(missing_from "$name")"
    if ((force == 0)) && [[ -z "$lacking" ]]; then
        say "image $name already exists with $packages (use --force to rebuild)"
        exit 0
    fi
    if ((force)); then
        say "image $name exists; rebuilding because of --force"
    else
        say "image $name exists but lacks ${lacking% }; rebuilding it with $packages"
    fi
fi

[[ "$(id -u)" == 0 ]] || die "debootstrap needs root (run this script with sudo)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install -y debootstrap)"

# The Debian mirror the host's apt uses for $SUITE (not -security/-updates).
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        awk -v suite="$SUITE" '
            /^[[:space:]]*deb[[:space:]]/ {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[[:space:]]*#/) continue
                    if (line ~ /^URIs:/)    { sub(/^URIs:[[:space:]]*/, "", line); uris = line }
                    if (line ~ /^Suites:/)  { sub(/^Suites:[[:space:]]*/, "", line); suites = " " line " " }
                    if (line ~ /^Types:/)   { sub(/^Types:[[:space:]]*/, "", line); types = " " line " " }
                    if (line ~ /^Enabled:/) { sub(/^Enabled:[[:space:]]*/, "", line); enabled = tolower(line) }
                }
                if (enabled != "no" && types ~ / deb / && suites ~ (" " suite " ") && uris != "") {
                    split(uris, u, /[[:space:]]+/); print u[1]; exit
                }
            }' "$f"
    done
}

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    while read -r m; do
        case "$m" in
            http://* | https://* | file:/*) mirror="$m"; break ;;
        esac
    done < <(find_mirror)
fi
mirror="${mirror:-http://deb.debian.org/debian}"

start=$SECONDS
ds_pid=""
workdir="$(mktemp -d "${TMPDIR:-/var/tmp}/codetape-rootfs.XXXXXX")"
rootfs="$workdir/rootfs"
log="$workdir/debootstrap.log"

cleanup() {
    local rc=$? mnt
    trap - EXIT INT TERM
    if [[ -n "${ds_pid:-}" ]] && kill -0 -- "-$ds_pid" 2>/dev/null; then
        say "stopping debootstrap (process group $ds_pid)"
        kill -TERM -- "-$ds_pid" 2>/dev/null || true
        for _ in {1..20}; do
            kill -0 -- "-$ds_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$ds_pid" 2>/dev/null || true
    fi
    if [[ -n "${workdir:-}" && -d "$workdir" ]]; then
        # A failed debootstrap can leave proc/sys mounted inside the rootfs:
        # unmount (deepest first) before deleting anything.
        awk '{print $2}' /proc/mounts | grep -F "$workdir/" | sort -r |
            while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done || true
        rm -rf --one-file-system "$workdir" ||
            say "warning: could not fully remove $workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building $name from $SUITE (minbase + $packages) using mirror $mirror"
say "step 1/4: debootstrap into $rootfs (log: $log)"
# Show the main steps, not the per-package lines.
# debootstrap runs in its own process group (setsid) in the background so that a
# signal reaches the trap at once and the trap can stop the whole group.
cache=()
if [[ -n "${DEBOOTSTRAP_CACHE:-}" ]]; then
    mkdir -p "$DEBOOTSTRAP_CACHE" && cache=(--cache-dir="$(realpath "$DEBOOTSTRAP_CACHE")")
fi
setsid -w debootstrap --variant=minbase "${cache[@]}" --include="$packages" "$SUITE" "$rootfs" "$mirror" \
    > >(tee "$log" | awk '!/^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) [a-z0-9]/ { print "    " $0; fflush() }' >&2) 2>&1 &
ds_pid=$!
ds_rc=0
wait "$ds_pid" || ds_rc=$?
ds_pid=""
if ((ds_rc != 0)); then
    say "debootstrap failed; last 40 lines of its log:"
    tail -n 40 "$log" >&2 || true
    if [[ -s "$rootfs/debootstrap/debootstrap.log" ]]; then
        say "last 20 lines of $rootfs/debootstrap/debootstrap.log:"
        tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2 || true
    fi
    die "debootstrap failed after $((SECONDS - start)) s"
fi
say "debootstrap done after $((SECONDS - start)) s ($(du -sh --one-file-system "$rootfs" | cut -f1))"

say "step 2/4: trimming the root filesystem"
if awk '{print $2}' /proc/mounts | grep -qF "$rootfs/"; then
    die "something is still mounted under $rootfs"
fi
(
    cd "$rootfs"
    rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb \
        var/cache/apt/archives/partial/* var/cache/debconf/*-old var/lib/dpkg/*-old \
        usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian/* \
        usr/share/locale/* usr/share/common-licenses/* \
        var/log/* tmp/* var/tmp/* root/.cache dev/* debootstrap
    # Docker provides these at run time; don't ship the build host's copies.
    : >etc/resolv.conf
    printf 'localhost\n' >etc/hostname
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >etc/hosts
    rm -f etc/machine-id var/lib/dbus/machine-id
    mkdir -p tmp var/tmp && chmod 1777 tmp var/tmp
)

say "step 3/4: checking python3 in the rootfs as uid 65534"
grep -q '^nobody:x:65534:65534:' "$rootfs/etc/passwd" || die "user nobody (65534) is missing from the rootfs"
chroot --userspec=65534:65534 "$rootfs" /usr/bin/env -i PATH="$IMAGE_PATH" \
    python3 -c 'import sys, os, json, pickle; print("   ", sys.version.split()[0], "uid", os.getuid())' >&2 ||
    die "python3 does not run as uid 65534 in the rootfs"
for pkg in "${include[@]}"; do
    status="$(chroot "$rootfs" dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == ii* ]] || die "package $pkg is not installed in the rootfs"
done
say "rootfs size after trimming: $(du -sh --one-file-system "$rootfs" | cut -f1)"

say "step 4/4: docker import -> $name"
tar --numeric-owner --xattrs -C "$rootfs" -c . |
    docker import \
        --message "codetape offline image: debootstrap $SUITE minbase + $packages" \
        --change 'CMD ["python3"]' \
        --change "ENV PATH=$IMAGE_PATH" \
        --change 'ENV LANG=C.UTF-8' \
        - "$name" >/dev/null

docker run --rm --network none --user 65534:65534 "$name" \
    python3 -c 'import os; assert os.getuid() == 65534; print("ok")' >/dev/null ||
    die "the imported image $name does not run python3 as uid 65534"

size="$(docker image inspect --format '{{.Size}}' "$name")"
say "built $name in $((SECONDS - start)) s ($((size / 1024 / 1024)) MiB)"
