#!/bin/bash
# bench_inventory IMAGE_DIR NFSROOT_BIN
#
# `sync` of a 1000-host inventory through the binary: the dry run (parse,
# render every per-host PXELINUX file, the dnsmasq and dhcpd configs and the
# /etc/hosts block, diff them against the disk: nothing written), the first
# real sync (writes with fsyncs, per-host ssh host keys and log
# directories), and a sync with nothing to do; each the median of 3 runs
# but the first sync. There is no standard tool doing the same work, so the
# figures are absolute; the target (kept from the test's former limit) is
# the dry run under 1 s.
#
# The image is hardlink-copied (`cp -al`) into a temp dir with its saved
# profile and published there, so sync's writes (a new /etc/hosts by
# rename, log directories) never touch IMAGE_DIR. Needs /usr/bin/time
# (package time).

_bench_inv_median3() { # LABEL CMD...: median wall seconds of 3 runs
    local label=$1 t
    shift
    local -a all=()
    for _ in 1 2 3; do
        t=$(mktemp)
        /usr/bin/time -f '%e' -o "$t" "$@" >/dev/null 2>"$t.err" || {
            echo "bench: $label failed:" >&2
            cat "$t.err" >&2
            return 1
        }
        all+=("$(cat "$t")")
        rm -f "$t" "$t.err"
    done
    printf '%s\n' "${all[@]}" | sort -n | sed -n 2p
}

bench_inventory() {
    local img=$1 bin=$2 n=1000
    local name base work
    name=$(basename "$img")
    base=$(dirname "$img")
    work=$(mktemp -d "${TMPDIR:-/tmp}/nfsroot-bench-inv.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    mkdir -p "$work/base/.nfsroot/profiles" "$work/etc"
    cp -al "$img" "$work/base/$name"
    if [ -f "$base/.nfsroot/profiles/$name.toml" ]; then
        cp "$base/.nfsroot/profiles/$name.toml" "$work/base/.nfsroot/profiles/"
    fi
    local -a args=(--base-dir "$work/base" --tftp-root "$work/tftp"
        --etc-dir "$work/etc" --inventory "$work/inventory.toml" -q)
    "$bin" "${args[@]}" publish "$name" >/dev/null 2>"$work/publish.log" || {
        cat "$work/publish.log" >&2
        return 1
    }
    {
        printf '[cluster]\nsubnet = "10.20.0.0/16"\ngateway = "10.20.0.1"\n'
        printf 'nfs_server = "10.20.0.1"\ndomain = "big.example"\nimage = "%s"\n[hosts]\n' "$name"
        # Every third host differs from the default (a per-host file).
        for ((i = 0; i < n; i++)); do
            local extra=""
            [ $((i % 3)) = 0 ] && extra=', cmdline = "quiet"'
            printf 'n%04d = { mac = "52:54:00:01:%02x:%02x", ip = "10.20.%d.%d"%s }\n' \
                "$i" $((i >> 8)) $((i & 255)) $(((i + 258) >> 8)) $(((i + 258) & 255)) "$extra"
        done
    } >"$work/inventory.toml"

    local dry full noop t
    dry=$(_bench_inv_median3 sync-dry-run "$bin" "${args[@]}" sync --dry-run) || return 1
    t=$(mktemp)
    /usr/bin/time -f '%e' -o "$t" "$bin" "${args[@]}" sync >/dev/null || return 1
    full=$(cat "$t")
    rm -f "$t"
    noop=$(_bench_inv_median3 sync-noop "$bin" "${args[@]}" sync) || return 1
    local files
    files=$(find "$work/tftp/pxelinux.cfg" -name '01-*' | wc -l)
    printf '%-36s %8s s\n' "sync --dry-run, $n hosts (median)" "$dry" \
        "first sync (writes, keys, fsyncs)" "$full" \
        "sync with nothing to do (median)" "$noop"
    echo "per-host PXELINUX files written: $files (expected $(((n + 2) / 3)))"
    if [ "$(echo "$dry < 1" | bc)" = 1 ]; then
        echo "target: dry run under 1 s: met"
    else
        echo "target: dry run under 1 s: MISSED ($dry s)"
    fi
}
