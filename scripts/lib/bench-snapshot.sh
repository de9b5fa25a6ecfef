#!/bin/bash
# bench_snapshot IMAGE_DIR SNAPSHOT_BIN
#
# Times nfsroot's snapshot (gz and zst) against GNU tar on the same image in
# the same run, and prints wall time, peak RSS and size of each, and the
# ratios against `tar --xattrs --acls --numeric-owner -czpf`.
#
# SNAPSHOT_BIN is either the nfsroot binary (run as
# `nfsroot --base-dir PARENT snapshot NAME -o FILE --format F`) or the
# stand-in `examples/snapshot` (run as `snapshot IMAGE_DIR -o FILE --format F`).
# Output files go to $BENCH_TMP (default: a temp dir removed afterwards).
# Needs /usr/bin/time (package time), tar and zstd.

_bench_snap_cmd() { # BIN IMAGE_DIR OUT FORMAT
    local bin=$1 img=$2 out=$3 fmt=$4
    if [ "$(basename "$bin")" = nfsroot ]; then
        echo "$bin" --base-dir "$(dirname "$img")" snapshot "$(basename "$img")" \
            -o "$out" --format "$fmt"
    else
        echo "$bin" "$img" -o "$out" --format "$fmt"
    fi
}

_bench_run() { # LABEL OUTFILE CMD...
    local label=$1 out=$2
    shift 2
    local tf
    tf=$(mktemp)
    if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >/dev/null 2>"$tf.err"; then
        echo "bench: $label failed:" >&2
        cat "$tf.err" >&2
        rm -f "$tf" "$tf.err"
        return 1
    fi
    local wall rss size
    read -r wall rss <"$tf"
    size=$(stat -c %s "$out")
    rm -f "$tf" "$tf.err"
    printf '%-26s %8.2f s %8d KB %12d bytes\n' "$label" "$wall" "$rss" "$size"
    _BENCH_WALL[$label]=$wall
    _BENCH_SIZE[$label]=$size
}

bench_snapshot() {
    local img=${1:?usage: bench_snapshot IMAGE_DIR SNAPSHOT_BIN} bin=${2:?usage: bench_snapshot IMAGE_DIR SNAPSHOT_BIN}
    img=$(cd "$img" && pwd) || return 1
    local tmp=${BENCH_TMP:-}
    local own_tmp=
    if [ -z "$tmp" ]; then
        tmp=$(mktemp -d)
        own_tmp=1
    fi
    declare -gA _BENCH_WALL=() _BENCH_SIZE=()
    rm -f "$tmp"/gnu.tar.gz "$tmp"/gnu.tar.zst "$tmp"/n.tar.*
    echo "image: $img ($(du -s --apparent-size -B1M "$img" | cut -f1) MB), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    # Warm the page cache so every contender reads from memory.
    tar -cf - -C "$img" . | cat >/dev/null
    printf '%-26s %10s %11s %18s\n' what wall "peak RSS" size
    _bench_run "gnu tar -czpf" "$tmp/gnu.tar.gz" \
        tar --xattrs --acls --numeric-owner -czpf "$tmp/gnu.tar.gz" -C "$img" . || return 1
    _bench_run "gnu tar | zstd -T0 -3" "$tmp/gnu.tar.zst" \
        sh -c 'tar --xattrs --acls --numeric-owner -cpf - -C "$1" . | zstd -q -f -T0 -3 -o "$2"' \
        sh "$img" "$tmp/gnu.tar.zst" || return 1
    # shellcheck disable=SC2046
    _bench_run "nfsroot snapshot gz" "$tmp/n.tar.gz" \
        $(_bench_snap_cmd "$bin" "$img" "$tmp/n.tar.gz" gz) || return 1
    # shellcheck disable=SC2046
    _bench_run "nfsroot snapshot zst" "$tmp/n.tar.zst" \
        $(_bench_snap_cmd "$bin" "$img" "$tmp/n.tar.zst" zst) || return 1
    local g=${_BENCH_WALL[gnu tar -czpf]} gs=${_BENCH_SIZE[gnu tar -czpf]}
    local nz=${_BENCH_WALL[nfsroot snapshot gz]} ns=${_BENCH_SIZE[nfsroot snapshot gz]}
    local zz=${_BENCH_WALL[nfsroot snapshot zst]}
    awk -v g="$g" -v gs="$gs" -v nz="$nz" -v ns="$ns" -v zz="$zz" 'BEGIN {
        gr = g / (nz > 0 ? nz : 0.01); zr = g / (zz > 0 ? zz : 0.01); sr = ns / gs
        printf "gz:  %.1fx faster than GNU tar -czpf, size %.3f of it (target >= 4x, <= 1.000): %s\n",
            gr, sr, ((gr >= 4 && sr <= 1) ? "met" : "NOT met")
        printf "zst: %.1fx faster than GNU tar -czpf (target >= 10x): %s\n",
            zr, ((zr >= 10) ? "met" : "NOT met")
    }'
    if [ -n "$own_tmp" ]; then
        rm -rf "$tmp"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    bench_snapshot "$@"
fi
