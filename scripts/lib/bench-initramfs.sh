# shellcheck shell=bash
# Benchmark: nfsroot's own initramfs builder against the distribution's
# mkinitramfs (BOOT=nfs, MODULES=netboot) on the same image and kernel.
# Sourced by `scripts/bench initramfs`; needs root (mkinitramfs runs in a
# chroot of a throwaway copy of the image, in private namespaces).
#
#   bench_initramfs IMAGE_DIR NFSROOT_BIN [KERNEL_VERSION]
#
# Prints one line per builder (wall time, size, kernel modules shipped) and
# nfsroot's figures as ratios of mkinitramfs's. Both builders compress with
# the same tool (mkinitramfs gets COMPRESS=), so the sizes compare; the
# module counts show how much driver coverage each size buys.
# Env: BENCH_COMPRESSION (zstd|gzip, default zstd), BENCH_TMPDIR (where the
# copy of the image goes; default /var/tmp), BENCH_KEEP=1 keeps the outputs.

_bench_now() { date +%s%N; }

_bench_newest_kernel() {
    # dpkg ordering when dpkg is here, else sort -V (the same for kernel
    # release strings in practice).
    local boot=$1/boot best= v
    for v in "$boot"/vmlinuz-*; do
        [ -f "$v" ] || continue
        v=${v##*/vmlinuz-}
        if [ -z "$best" ]; then
            best=$v
        elif command -v dpkg >/dev/null; then
            dpkg --compare-versions "$v" gt "$best" && best=$v
        else
            best=$(printf '%s\n%s\n' "$best" "$v" | sort -V | tail -n1)
        fi
    done
    [ -n "$best" ] || { echo "bench-initramfs: no kernel in $boot" >&2; return 1; }
    echo "$best"
}

bench_initramfs() {
    local image=${1:?usage: bench_initramfs IMAGE_DIR NFSROOT_BIN [KERNEL_VERSION]}
    local bin=${2:?usage: bench_initramfs IMAGE_DIR NFSROOT_BIN [KERNEL_VERSION]}
    local kver=${3:-}
    local comp=${BENCH_COMPRESSION:-zstd}
    [ -d "$image/etc" ] || { echo "bench-initramfs: $image is not an image root" >&2; return 1; }
    [ -x "$bin" ] || { echo "bench-initramfs: $bin is not executable" >&2; return 1; }
    [ "$(id -u)" = 0 ] || { echo "bench-initramfs: needs root (chroot for mkinitramfs)" >&2; return 1; }
    [ -x "$image/usr/sbin/mkinitramfs" ] || {
        echo "bench-initramfs: $image has no mkinitramfs; add initramfs-tools to the profile" >&2
        return 1
    }
    [ -n "$kver" ] || kver=$(_bench_newest_kernel "$image") || return 1

    local work
    work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/nfsroot-bench.XXXXXX") || return 1
    # shellcheck disable=SC2064
    trap "rm -rf '$work'; trap - RETURN" RETURN

    # 1. nfsroot initramfs build, straight from the image (runs nothing in it).
    local t0 t1 ours_ns ours_size
    t0=$(_bench_now)
    "$bin" initramfs build "$image" --kernel "$kver" -o "$work/ours.img" \
        --compression "$comp" >"$work/ours.log" 2>&1 || {
        echo "bench-initramfs: nfsroot initramfs build failed:" >&2
        cat "$work/ours.log" >&2
        return 1
    }
    t1=$(_bench_now)
    ours_ns=$((t1 - t0))
    ours_size=$(stat -c %s "$work/ours.img")

    # 2. mkinitramfs inside a copy of the image (the copy is not timed).
    cp -a "$image" "$work/root"
    mkdir -p "$work/root/etc/initramfs-tools/conf.d"
    # The same compression as ours, so the sizes compare.
    printf 'BOOT=nfs\nMODULES=netboot\nCOMPRESS=%s\n' "$comp" \
        >"$work/root/etc/initramfs-tools/conf.d/nfsroot"
    t0=$(_bench_now)
    unshare --mount --propagation private --pid --fork --kill-child=SIGKILL -- sh -ec '
        r=$1 k=$2
        mount -t proc proc "$r/proc"
        mount --rbind /sys "$r/sys"; mount --make-rslave "$r/sys"
        mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
        mount -t tmpfs tmpfs "$r/run"; mkdir -p "$r/tmp"
        chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
            mkinitramfs -o /tmp/mk.img "$k"
        chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
            lsinitramfs /tmp/mk.img > "$r/tmp/mk.list"
    ' bench "$work/root" "$kver" >"$work/mk.log" 2>&1 || {
        echo "bench-initramfs: mkinitramfs failed:" >&2
        tail -20 "$work/mk.log" >&2
        return 1
    }
    t1=$(_bench_now)
    local mk_ns=$((t1 - t0)) mk_size
    mk_size=$(stat -c %s "$work/root/tmp/mk.img")

    # Driver coverage: kernel modules in each archive.
    local ours_ko mk_ko
    case $comp in
    zstd) ours_ko=$(zstd -dc "$work/ours.img" | cpio -t 2>/dev/null | grep -c '\.ko') ;;
    *) ours_ko=$(gzip -dc "$work/ours.img" | cpio -t 2>/dev/null | grep -c '\.ko') ;;
    esac
    mk_ko=$(grep -c '\.ko' "$work/root/tmp/mk.list")
    awk -v on="$ours_ns" -v os="$ours_size" -v mn="$mk_ns" -v ms="$mk_size" \
        -v k="$kver" -v c="$comp" -v ok="$ours_ko" -v mk="$mk_ko" 'BEGIN {
        printf "kernel %s, both compressed with %s\n", k, c
        printf "%-12s %6.2f s %7.1f MiB %5d modules\n", "nfsroot", on / 1e9, os / 1048576, ok
        printf "%-12s %6.2f s %7.1f MiB %5d modules\n", "mkinitramfs", mn / 1e9, ms / 1048576, mk
        printf "ratio: nfsroot takes %.3fx the time, %.2fx the size, %.2fx the modules\n",
            on / mn, os / ms, ok / mk
    }'
    if [ -n "${BENCH_KEEP:-}" ]; then
        mkdir -p "${BENCH_TMPDIR:-/var/tmp}/nfsroot-bench-out"
        mv "$work/ours.img" "$work/root/tmp/mk.img" "${BENCH_TMPDIR:-/var/tmp}/nfsroot-bench-out/"
    fi
}
