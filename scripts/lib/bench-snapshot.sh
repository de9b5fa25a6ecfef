#!/bin/bash
# bench_snapshot IMAGE_DIR SNAPSHOT_BIN
#
# Times nfsroot's snapshot (gz and zst) against the fastest standard tools
# doing the same work in the same run (`tar --sparse --xattrs --acls
# --numeric-owner` piped into `pigz -6` and into `zstd -T0 -3`), prints wall
# time, CPU time (user + system, every process of the contender: on a
# shared machine the steadier figure), peak RSS and size of each, checks that every archive lists every
# entry `find` sees, and prints nfsroot's time and size as ratios of the
# standard tools' (below 1 is better). The machine may be shared, so the
# contenders take turns, BENCH_ROUNDS rounds (default 3), and each time is
# the median of its rounds.
#
# SNAPSHOT_BIN is either the nfsroot binary (run as
# `nfsroot --base-dir PARENT snapshot NAME -o FILE --format F`) or the
# stand-in `examples/snapshot` (run as `snapshot IMAGE_DIR -o FILE --format F`).
# Output files go to $BENCH_TMP (default: a temp dir removed afterwards).
# Needs /usr/bin/time (package time), tar, pigz and zstd.

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
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >/dev/null 2>"$tf.err"; then
        echo "bench: $label failed:" >&2
        cat "$tf.err" >&2
        rm -f "$tf" "$tf.err"
        return 1
    fi
    local wall user sys rss size cpu
    read -r wall user sys rss <"$tf"
    cpu=$(echo "$user + $sys" | bc)
    size=$(stat -c %s "$out")
    rm -f "$tf" "$tf.err"
    printf '%-26s %8.2f s %8.2f s %8d KB %12d bytes\n' "$label" "$wall" "$cpu" "$rss" "$size"
    _BENCH_WALLS[$label]="${_BENCH_WALLS[$label]:-} $wall"
    _BENCH_WALL[$label]=$(_bench_median "${_BENCH_WALLS[$label]}")
    _BENCH_CPUS[$label]="${_BENCH_CPUS[$label]:-} $cpu"
    _BENCH_CPU[$label]=$(_bench_median "${_BENCH_CPUS[$label]}")
    _BENCH_SIZE[$label]=$size
}

_bench_median() { # "V1 V2 ...": the median
    echo "$1" | tr ' ' '\n' | grep . | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# _bench_complete LABEL ARCHIVE IMAGE_DIR [nfsroot]: does GNU tar list
# every entry `find` sees in the image (sockets excepted: no archive holds
# them)? For nfsroot's archives, the contents of the top-level mount
# points (proc sys dev run tmp) are not expected: snapshots keep those
# directories empty by design (src/snapshot/tree.rs, MOUNT_POINTS).
_bench_complete() {
    local label=$1 archive=$2 img=$3 want got
    local skip='^$'
    [ "${4:-}" = nfsroot ] && skip='^(proc|sys|dev|run|tmp)/'
    want=$(cd "$img" && find . -mindepth 1 ! -type s | sed 's|^\./||' | grep -Ev "$skip" | LC_ALL=C sort)
    got=$(tar --quoting-style=literal -tf "$archive" | sed 's|^\./||; s|/$||' | grep -v '^$' | LC_ALL=C sort -u)
    local missing extra
    missing=$(comm -23 <(echo "$want") <(echo "$got") | wc -l)
    extra=$(comm -13 <(echo "$want") <(echo "$got") | wc -l)
    if [ "$missing" = 0 ] && [ "$extra" = 0 ]; then
        echo "complete: $label lists all $(echo "$want" | wc -l) entries find sees"
    else
        echo "INCOMPLETE: $label: $missing entries missing, $extra extra"
        return 1
    fi
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
    declare -gA _BENCH_WALL=() _BENCH_WALLS=() _BENCH_CPU=() _BENCH_CPUS=() _BENCH_SIZE=()
    rm -f "$tmp"/gnu.tar.gz "$tmp"/gnu.tar.zst "$tmp"/n.tar.*
    echo "image: $img ($(du -s --apparent-size -B1M "$img" | cut -f1) MB), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    # Warm the page cache so every contender reads from memory.
    tar -cf - -C "$img" . | cat >/dev/null
    printf '%-26s %10s %10s %11s %18s\n' what wall cpu "peak RSS" size
    # The fastest standard tools on every core, with holes kept as nfsroot
    # keeps them (--sparse) and the same metadata.
    local gtar='tar --sparse --xattrs --acls --numeric-owner -cpf - -C "$1" .'
    local round
    for round in $(seq "${BENCH_ROUNDS:-3}"); do
        rm -f "$tmp"/gnu.tar.gz "$tmp"/gnu.tar.zst "$tmp"/n.tar.*
        echo "round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
        _bench_run "tar | pigz -6" "$tmp/gnu.tar.gz" \
            sh -c "$gtar | pigz -6 > \"\$2\"" sh "$img" "$tmp/gnu.tar.gz" || return 1
        _bench_run "tar | zstd -T0 -3" "$tmp/gnu.tar.zst" \
            sh -c "$gtar | zstd -q -f -T0 -3 -o \"\$2\"" sh "$img" "$tmp/gnu.tar.zst" || return 1
        # shellcheck disable=SC2046
        _bench_run "nfsroot snapshot gz" "$tmp/n.tar.gz" \
            $(_bench_snap_cmd "$bin" "$img" "$tmp/n.tar.gz" gz) || return 1
        # shellcheck disable=SC2046
        _bench_run "nfsroot snapshot zst" "$tmp/n.tar.zst" \
            $(_bench_snap_cmd "$bin" "$img" "$tmp/n.tar.zst" zst) || return 1
    done
    local f
    for f in gnu.tar.gz gnu.tar.zst; do
        _bench_complete "$f" "$tmp/$f" "$img" || return 1
    done
    for f in n.tar.gz n.tar.zst; do
        _bench_complete "$f" "$tmp/$f" "$img" nfsroot || return 1
    done
    local pg=${_BENCH_WALL[tar | pigz -6]} zs=${_BENCH_WALL[tar | zstd -T0 -3]}
    local ng=${_BENCH_WALL[nfsroot snapshot gz]} nz=${_BENCH_WALL[nfsroot snapshot zst]}
    awk -v pg="$pg" -v pgs="${_BENCH_SIZE[tar | pigz -6]}" -v pgc="${_BENCH_CPU[tar | pigz -6]}" \
        -v zs="$zs" -v zss="${_BENCH_SIZE[tar | zstd -T0 -3]}" -v zsc="${_BENCH_CPU[tar | zstd -T0 -3]}" \
        -v ng="$ng" -v ngs="${_BENCH_SIZE[nfsroot snapshot gz]}" -v ngc="${_BENCH_CPU[nfsroot snapshot gz]}" \
        -v nz="$nz" -v nzs="${_BENCH_SIZE[nfsroot snapshot zst]}" -v nzc="${_BENCH_CPU[nfsroot snapshot zst]}" 'BEGIN {
        m = 0.01
        printf "medians: tar | pigz %.2f s, nfsroot gz %.2f s, tar | zstd %.2f s, nfsroot zst %.2f s\n", pg, ng, zs, nz
        printf "gz:  nfsroot takes %.2fx the time of tar | pigz (%.2fx its CPU), %.3fx its size\n",
            ng / (pg > m ? pg : m), ngc / (pgc > m ? pgc : m), ngs / pgs
        printf "zst: nfsroot takes %.2fx the time of tar | zstd -T0 (%.2fx its CPU), %.3fx its size\n",
            nz / (zs > m ? zs : m), nzc / (zsc > m ? zsc : m), nzs / zss
    }'
    if [ -n "$own_tmp" ]; then
        rm -rf "$tmp"
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    bench_snapshot "$@"
fi
