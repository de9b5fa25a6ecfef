#!/bin/sh
# /init of an nfsroot initramfs (busybox ash). It brings up one network
# interface, mounts the NFS root and switches to it. Every step prints one
# line starting with "nfsroot-init: "; a failure prints
# "nfsroot-init: FATAL: ..." and drops to a shell, so a watcher on the
# serial console sees the cause at once.

export PATH=/bin:/sbin
KVER=@KVER@

log() { echo "nfsroot-init: $*"; }

rescue() {
    echo "nfsroot-init: FATAL: $*"
    echo "nfsroot-init: dropping to a shell"
    while :; do
        setsid cttyhack sh || sh
    done
}

loaded_modules() { echo $(cut -d' ' -f1 /proc/modules 2>/dev/null); }

# net_devices: the PCI network controllers present (class 02xxxx) as
# vendor:device, so a node whose card has no driver here says which card.
net_devices() {
    for d in /sys/bus/pci/devices/*; do
        read -r c 2>/dev/null <"$d/class" || continue
        case $c in 0x02*) ;; *) continue ;; esac
        read -r v <"$d/vendor" && read -r p <"$d/device" && printf ' %s:%s' "${v#0x}" "${p#0x}"
    done
}

mkdir -p /proc /sys /dev /run /root /tmp
mount -t proc -o nodev,noexec,nosuid proc /proc
mount -t sysfs -o nodev,noexec,nosuid sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mount -t tmpfs -o mode=0755,nodev,nosuid tmpfs /run
mkdir -p /run/nfsroot
log "starting (kernel $KVER)"

# --- kernel command line -------------------------------------------------
ROOT= NFSROOT= IPCONF= MODE=ro INIT=/sbin/init RETRIES=5 IFNAMES= BREAK=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    root=*) ROOT=${arg#root=} ;;
    nfsroot=*) NFSROOT=${arg#nfsroot=} ;;
    ip=*) IPCONF=${arg#ip=} ;;
    ro) MODE=ro ;;
    rw) MODE=rw ;;
    init=*) INIT=${arg#init=} ;;
    nfsroot.retries=*) RETRIES=${arg#nfsroot.retries=} ;;
    nfsroot.break) BREAK=1 ;;
    net.ifnames=*) IFNAMES=${arg#net.ifnames=} ;;
    esac
done
set +f
case "$RETRIES" in '' | *[!0-9]*) RETRIES=5 ;; esac
[ "$RETRIES" -ge 1 ] || RETRIES=1
case "$ROOT" in
'' | /dev/nfs | nfs) ;;
*) log "root=$ROOT is not /dev/nfs; mounting the NFS root anyway" ;;
esac

# ip=<client>:<server>:<gw>:<netmask>:<hostname>:<dev>:<autoconf>:<dns0>:<dns1>
# or ip=dhcp (also ip=on/any/both, or empty).
IP_CLIENT= IP_SERVER= IP_GW= IP_MASK= IP_HOST= IP_DEV= IP_AUTO= IP_DNS0= IP_DNS1=
case "$IPCONF" in
'' | dhcp | on | any | both | bootp) IP_AUTO=dhcp ;;
off | none) IP_AUTO=off ;;
*)
    oldifs=$IFS
    IFS=:
    set -f
    set -- $IPCONF
    set +f
    IFS=$oldifs
    IP_CLIENT=$1 IP_SERVER=$2 IP_GW=$3 IP_MASK=$4 IP_HOST=$5 IP_DEV=$6 IP_AUTO=$7 IP_DNS0=$8 IP_DNS1=$9
    case "$IP_AUTO" in
    dhcp | on | any | both | bootp) IP_AUTO=dhcp ;;
    *) if [ -n "$IP_CLIENT" ]; then IP_AUTO=static; else IP_AUTO=dhcp; fi ;;
    esac
    ;;
esac
[ "$IP_AUTO" = off ] && rescue "ip=$IPCONF turns networking off; an NFS root needs it"

# --- modules -------------------------------------------------------------
# Service modules (NFS) unconditionally; drivers only for present devices,
# by modalias through modules.alias (busybox modprobe matches the globs).
# The service modules load in the background, beside the drivers and DHCP
# (the two sets share no module), and are waited for before the mount.
modprobe -q -a $(cat /etc/nfsroot/modules.load) 2>/dev/null &
SERVICE_MODULES=$!
device_aliases() {
    cat /sys/bus/pci/devices/*/modalias /sys/bus/virtio/devices/*/modalias 2>/dev/null | sort -u
}
# Twice: bus drivers (virtio_pci) loaded in the first pass add devices
# (virtio0...) whose drivers the second pass loads.
for pass in 1 2; do
    aliases=$(device_aliases)
    [ -n "$aliases" ] && modprobe -q -a $aliases 2>/dev/null
done

# --- network interface ---------------------------------------------------
pick_interface() {
    if [ -n "$IP_DEV" ]; then
        [ -e "/sys/class/net/$IP_DEV" ] && echo "$IP_DEV"
        return
    fi
    if [ -e /sys/class/net/eth0 ]; then
        echo eth0
        return
    fi
    for d in /sys/class/net/*; do
        n=${d##*/}
        case "$n" in lo | '*' | sit* | tunl* | ip6tnl* | dummy*) continue ;; esac
        echo "$n"
        return
    done
}
IF=
i=0
while [ $i -lt 100 ]; do
    IF=$(pick_interface)
    [ -n "$IF" ] && break
    sleep 0.1
    i=$((i + 1))
done
if [ -z "$IF" ]; then
    nics=$(net_devices)
    rescue "no network interface${IP_DEV:+ $IP_DEV} (is the NIC driver in the initramfs? PCI network devices:${nics:- none}; a profile's initramfs.net_drivers names the drivers; loaded: $(loaded_modules))"
fi
ip link set dev lo up 2>/dev/null
ip link set dev "$IF" up

mask2prefix() {
    n=0
    for o in $(echo "$1" | tr . ' '); do
        case $o in
        255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;;
        248) n=$((n + 5)) ;; 240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;;
        192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
        esac
    done
    echo $n
}

ADDRESS= PREFIX= GATEWAY= HOSTNAME= DNS= DOMAIN= DHCP_SIADDR= DHCP_ROOTPATH= DHCP_SERVERID=
if [ "$IP_AUTO" = dhcp ]; then
    if ! out=$(udhcpc -i "$IF" -n -q -t 5 -T 2 -O rootpath -s /etc/udhcpc.script 2>&1) ||
        [ ! -s /run/nfsroot/dhcp.env ]; then
        rescue "no DHCP lease on $IF: $(echo $out)"
    fi
    . /run/nfsroot/dhcp.env
    ADDRESS=$DHCP_IP PREFIX=$DHCP_PREFIX GATEWAY=$DHCP_GATEWAY HOSTNAME=$DHCP_HOSTNAME
    DNS=$DHCP_DNS DOMAIN=$DHCP_DOMAIN
    METHOD=dhcp
else
    # Wait (bounded) for the link, then configure it statically.
    i=0
    while [ $i -lt 50 ] && [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" != 1 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    ADDRESS=$IP_CLIENT PREFIX=$(mask2prefix "${IP_MASK:-255.255.255.0}") GATEWAY=$IP_GW
    HOSTNAME=$IP_HOST DNS="$IP_DNS0${IP_DNS1:+ $IP_DNS1}"
    ip addr add "$ADDRESS/$PREFIX" dev "$IF" || rescue "cannot set address $ADDRESS/$PREFIX on $IF"
    [ -n "$GATEWAY" ] && { ip route add default via "$GATEWAY" dev "$IF" || log "cannot add route via $GATEWAY"; }
    METHOD=static
fi
log "$IF $ADDRESS/$PREFIX${GATEWAY:+ gw $GATEWAY} via $METHOD"

# --- NFS root ------------------------------------------------------------
wait "$SERVICE_MODULES"
log "loaded $(wc -l </proc/modules) modules: $(loaded_modules)"
# nfsroot=[<server>:]<path>[,<opts>]; missing parts come from ip= or DHCP.
spec=${NFSROOT:-$DHCP_ROOTPATH}
NFSOPTS=
case "$spec" in *,*) NFSOPTS=${spec#*,} spec=${spec%%,*} ;; esac
case "$spec" in
*:*) SERVER=${spec%%:*} NFSPATH=${spec#*:} ;;
*) SERVER=${IP_SERVER:-${DHCP_SIADDR:-$DHCP_SERVERID}} NFSPATH=$spec ;;
esac
# The kernel's nfsroot= replaces %s with the client address; so do we.
case "$NFSPATH" in *%s*) NFSPATH="${NFSPATH%%%s*}$ADDRESS${NFSPATH#*%s}" ;; esac
[ -n "$NFSPATH" ] || rescue "no NFS root: give nfsroot=<server>:<path> on the kernel command line"
[ -n "$SERVER" ] || rescue "no NFS server for $NFSPATH: give nfsroot=<server>:<path>"
case "$SERVER" in
*[!0-9.]*) rescue "NFS server $SERVER must be an IPv4 address (no name resolution in the initramfs)" ;;
esac
opts="$MODE,nolock,addr=$SERVER"
case ",$NFSOPTS," in *,clientaddr=*) ;; *) opts="$opts,clientaddr=$ADDRESS" ;; esac
[ -n "$NFSOPTS" ] && opts="$opts,$NFSOPTS"

[ -n "$BREAK" ] && { log "nfsroot.break: shell before mounting (exit to continue)"; sh; }

n=1
while :; do
    if err=$(mount -t nfs -o "$opts" "$SERVER:$NFSPATH" /root 2>&1); then
        break
    fi
    err=$(echo $err)
    if [ $n -ge "$RETRIES" ]; then
        rescue "cannot mount $SERVER:$NFSPATH: $err"
    fi
    log "mount attempt $n/$RETRIES of $SERVER:$NFSPATH failed: $err; retrying"
    sleep 2
    n=$((n + 1))
done
log "mounted $SERVER:$NFSPATH ($MODE)"
[ -e "/root$INIT" ] || [ -L "/root$INIT" ] ||
    rescue "$INIT not found in $SERVER:$NFSPATH (wrong path, or the image is not built?)"

# node_machine_id ROOT MAC FILE: this node's /etc/machine-id, in place
# before systemd starts, so nodes sharing a root never share (or write)
# one. The id is the first 32 hex digits of sha256("nfsroot machine-id
# <mac>"), the boot NIC's MAC in lower case with colons: stable across
# boots of a node (journald and D-Bus key on it), different per NIC, and
# computable on the master (it is not secret: anyone knowing the MAC can
# derive it). Without a MAC, a random id for this boot. FILE (on the /run
# tmpfs) is bound read-only over ROOT/etc/machine-id, before /proc moves
# away (mount's remount reads /proc/mounts): systemd reads a valid id from
# a file it cannot open for writing, so it writes nothing and sees no
# first boot (systemd-machine-id-commit, which would write, is masked).
node_machine_id() {
    case "$2" in
    '' | 00:00:00:00:00:00) mid=$(tr -d '-' </proc/sys/kernel/random/uuid) from="random, for this boot" ;;
    *) mid=$(printf 'nfsroot machine-id %s' "$2" | sha256sum | cut -c1-32) from="from the MAC of $IF" ;;
    esac
    if [ ! -f "$1/etc/machine-id" ]; then
        log "the new root has no /etc/machine-id; leaving the machine id to systemd"
        return
    fi
    echo "$mid" >"$3" &&
        mount --bind "$3" "$1/etc/machine-id" &&
        mount -o remount,bind,ro "$1/etc/machine-id" ||
        rescue "cannot bind the machine id over $1/etc/machine-id"
    log "machine id $mid ($from)"
}

# --- hand over -----------------------------------------------------------
q() { printf "%s='%s'\n" "$1" "$(echo "$2" | tr -d "'")"; }
{
    q INTERFACE "$IF"
    q ADDRESS "$ADDRESS"
    q PREFIX "$PREFIX"
    q GATEWAY "$GATEWAY"
    q SERVER "$SERVER"
    q NFSROOT "$SERVER:$NFSPATH"
    q HOSTNAME "$HOSTNAME"
    q DNS "$DNS"
    q DOMAIN "$DOMAIN"
    q ROOT_MODE "$MODE"
    q METHOD "$METHOD"
    q IFNAMES "$IFNAMES"
} >/run/nfsroot/net.env
{
    [ -n "$DOMAIN" ] && echo "search $DOMAIN"
    for d in $DNS; do echo "nameserver $d"; done
} >/run/nfsroot/resolv.conf

node_machine_id /root "$(cat "/sys/class/net/$IF/address" 2>/dev/null)" /run/nfsroot/machine-id
for m in /dev /run /sys /proc; do
    if [ -d "/root$m" ]; then
        mount --move "$m" "/root$m" || log "cannot move $m into the new root"
    else
        log "the new root has no $m; not moving it"
    fi
done
log "switching to $INIT"
exec switch_root /root "$INIT" "$@"
