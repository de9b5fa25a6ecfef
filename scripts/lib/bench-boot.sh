#!/bin/bash
# bench_boot BIN BASE_DIR TFTP_ROOT IMAGE
#
# Boot time of IMAGE (built and published under BASE_DIR and TFTP_ROOT)
# with the diskless unit fixup (issue 16, src/fixups/units.rs) against the
# same tree without it, in the same run and at the same CPU count: over
# BENCH_ROUNDS rounds (default 3) each round boots direct, then PXE, each
# time without and then with the fixup, so load drifting on a shared
# machine hits both. "Without" removes the fixup's masks (the links to
# /dev/null named by node.conf's UNITS_MASK) and empties UNITS_MASK so the
# ready hook expects none; "with" puts both back (also on exit).
#
# Prints, per boot: node up (boot-test's seconds from QEMU's start to the
# node line), userspace (systemd-analyze), the load average when the boot
# started and the three slowest units; then the median node-up and
# userspace of each variant and mode. BENCH_CPUS (default 2) is
# boot-test's --cpus. Needs python3 (to read boot-test's JSON).

_bench_boot_masks() { # IMAGE_DIR: the units node.conf says build masked
    (. "$1/etc/nfsroot/node.conf" && echo "$UNITS_MASK")
}

_bench_boot_set() { # IMAGE_DIR SAVED_CONF with|without
    local img=$1 saved=$2 u
    local etc=$img/etc/systemd/system
    if [ "$3" = without ]; then
        for u in $(_bench_boot_masks "$img"); do
            [ "$(readlink "$etc/$u" 2>/dev/null)" = /dev/null ] && rm -f "$etc/$u"
        done
        sed -i "s/^UNITS_MASK=.*/UNITS_MASK=''/" "$img/etc/nfsroot/node.conf"
    else
        cp -p "$saved" "$img/etc/nfsroot/node.conf"
        for u in $(_bench_boot_masks "$img"); do
            [ -e "$etc/$u" ] || [ -L "$etc/$u" ] || ln -s /dev/null "$etc/$u"
        done
    fi
}

# _bench_boot_line OUT.json: one line for the boot's JSON report.
_bench_boot_line() {
    python3 - "$1" <<'EOF'
import json, re, sys
r = json.load(open(sys.argv[1]))["result"]
up = (r.get("timings") or {}).get("node_up")
user, blame, in_blame = None, [], False
for l in r.get("analysis") or []:
    m = re.search(r"\+ ([0-9.]+)(min )?([0-9.]+)?s \(userspace\)", l)
    if m:
        user = float(m.group(1)) * 60 + float(m.group(3)) if m.group(2) else float(m.group(1))
    if l.startswith("== "):
        in_blame = l.startswith("== blame")
    elif in_blame and len(blame) < 3:
        blame.append(" ".join(l.split()[:2]))
ok = "ok" if r.get("passed") else "FAILED: " + (r.get("diagnosis") or "")[:80]
f = lambda v: "%6.1f" % v if v is not None else "     -"
print(f(up), f(user), ok, "|", "; ".join(blame))
EOF
}

bench_boot() {
    local bin=$1 base=$2 tftp=$3 image=$4
    local rounds=${BENCH_ROUNDS:-3} cpus=${BENCH_CPUS:-2}
    local img=$base/$image work
    work=$(mktemp -d)
    cp -p "$img/etc/nfsroot/node.conf" "$work/node.conf"
    # shellcheck disable=SC2064
    trap "_bench_boot_set '$img' '$work/node.conf' with; rm -rf '$work'" EXIT
    printf '%-8s %-7s %-6s %6s %6s %5s  %s\n' round variant mode up user load "result | slowest units"
    local r mode v load out
    for r in $(seq 1 "$rounds"); do
        for mode in direct pxe; do
            for v in without with; do
                _bench_boot_set "$img" "$work/node.conf" "$v"
                load=$(cut -d' ' -f1 /proc/loadavg)
                out=$work/$r-$mode-$v.json
                "$bin" --base-dir "$base" --tftp-root "$tftp" --json boot-test "$image" \
                    --mode "$mode" --cpus "$cpus" >"$out" 2>"$out.err" || true
                [ -s "$out" ] || { echo "bench: boot-test printed nothing:" >&2; cat "$out.err" >&2; return 1; }
                read -r up user rest <<<"$(_bench_boot_line "$out")"
                printf '%-8s %-7s %-6s %6s %6s %5s  %s\n' "$r" "$v" "$mode" "$up" "$user" "$load" "$rest"
                echo "$up $user" >>"$work/$mode-$v"
            done
        done
    done
    echo "median of $rounds, --cpus $cpus (node up / userspace, s):"
    for mode in direct pxe; do
        for v in without with; do
            printf '  %-6s %-7s %s\n' "$mode" "$v" "$(python3 -c '
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(i):
    v = [float(x[i]) for x in rows if x[i] != "-"]
    return "%.1f" % statistics.median(v) if v else "-"
print("%s / %s" % (med(0), med(1)))' "$work/$mode-$v")"
        done
    done
    _bench_boot_set "$img" "$work/node.conf" with
}
