#!/bin/bash
# Private pcscd for the virtual PIV card (tests/vpiv/piv_card.py).
#
#   pcscd.sh start DIR [BASEPORT]   start a private pcscd with one vpcd reader entry
#   pcscd.sh stop DIR               stop it, and every card whose pid is in DIR/cards/*.pid
#   pcscd.sh card DIR NAME 0|1 [ARGS]  start piv_card.py in reader 0/1, wait for "ready"
#
# The daemon runs in its own mount namespace (unshare -m) where
#   * DIR/run is bind-mounted on /run/pcscd, so its socket appears at DIR/run/pcscd.comm
#     (libpcsclite clients find it through PCSCLITE_CSOCK_NAME; pcscd itself cannot be
#     told another socket path), and
#   * an empty directory is mounted over /usr/lib/pcsc/drivers, so pcscd loads no USB
#     driver and never sees a real reader/YubiKey; the vpcd driver is used from a copy
#     in DIR.
# One vpcd entry gives two readers, "Virtual PCD 00 00" on BASEPORT and
# "Virtual PCD 00 01" on BASEPORT+1; a card connects to one of those ports.
# VPIV_READER_NAME overrides the "Virtual PCD" part (e.g. "Yubico YubiKey vPIV" for
# tools that filter readers on "yubikey").
# DIR/env (to be sourced) exports PCSCLITE_CSOCK_NAME, VPCD_PORT, VPCD_PORT2,
# VPCD_READER, VPCD_READER2.
set -euo pipefail

die() { echo "pcscd.sh: $*" >&2; exit 1; }

VPCD_LIB=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
NAME=${VPIV_READER_NAME:-Virtual PCD}
PY=${PYTHON:-$(command -v python3 || true)}

# Is TCP port $1 bindable on all interfaces (vpcd listens on INADDR_ANY)?
port_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# Deterministic base port from DIR (even, 40000..59998), then the next free pair.
pick_port() {
    local dir=$1 p i
    p=$(( 40000 + ( $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 9999 ) * 2 ))
    for i in $(seq 0 200); do
        if port_free "$p" && port_free $((p + 1)); then echo "$p"; return 0; fi
        p=$(( p + 2 )); [ "$p" -ge 60000 ] && p=40000
    done
    die "no free port pair found in 40000-60000"
}

list_readers() {
    if command -v opensc-tool >/dev/null; then
        PCSCLITE_CSOCK_NAME="$1/run/pcscd.comm" opensc-tool --list-readers 2>/dev/null || true
    else  # no lister available: trust the socket
        [ -S "$1/run/pcscd.comm" ] && printf '%s 00 00\n%s 00 01\n' "$NAME" "$NAME"
    fi
}

start() {
    local dir=$1 port=${2:-}
    [ -n "$PY" ] || die "python3 not found"
    command -v pcscd >/dev/null || die "pcscd not installed"
    [ -e "$VPCD_LIB" ] || die "vpcd driver $VPCD_LIB not installed (apt-get install vsmartcard-vpcd)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/pcscd.pid" ] && kill -0 "$(cat "$dir/pcscd.pid")" 2>/dev/null; then
        die "already running under $dir (pid $(cat "$dir/pcscd.pid"))"
    fi
    unshare -m true 2>/dev/null || die "cannot create a mount namespace (unshare -m failed; need root or CAP_SYS_ADMIN)"
    [ -n "$port" ] || port=$(pick_port "$dir")

    mkdir -p "$dir/reader.conf.d" "$dir/run" "$dir/nodrivers" "$dir/cards" "$dir/runroot/pcscd"
    rm -f "$dir/run/pcscd.comm" "$dir/run/pcscd.pid"
    cp "$(readlink -f "$VPCD_LIB")" "$dir/libifdvpcd.so"
    cat >"$dir/reader.conf.d/vpcd" <<EOF
FRIENDLYNAME "$NAME"
DEVICENAME   /dev/null:$port
LIBPATH      $dir/libifdvpcd.so
CHANNELID    $port
EOF
    # Inside the namespace: private /run/pcscd (bind mount if the directory exists,
    # otherwise a private /run is needed to have a mount point), no USB drivers.
    # exec keeps the pid of unshare == pid of pcscd.
    unshare -m --propagation private /bin/sh -c '
        set -e
        dir=$1
        if [ ! -d /run/pcscd ]; then
            mount --bind "$dir/runroot" /run
        fi
        mount --bind "$dir/run" /run/pcscd
        if [ -d /usr/lib/pcsc/drivers ]; then mount --bind "$dir/nodrivers" /usr/lib/pcsc/drivers; fi
        exec pcscd -f -c "$dir/reader.conf.d"
    ' sh "$dir" >"$dir/pcscd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/pcscd.pid"

    local i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { tail -n 5 "$dir/pcscd.log" >&2; die "pcscd exited early (log: $dir/pcscd.log)"; }
        if [ -S "$dir/run/pcscd.comm" ] && list_readers "$dir" | grep -qF "$NAME 00 01"; then
            break
        fi
        sleep 0.1
    done
    list_readers "$dir" | grep -qF "$NAME 00 00" || { stop "$dir"; die "pcscd started but lists no vpcd reader (log: $dir/pcscd.log)"; }

    {
        printf 'export PCSCLITE_CSOCK_NAME=%q\n' "$dir/run/pcscd.comm"
        printf 'export VPCD_PORT=%q\nexport VPCD_PORT2=%q\n' "$port" "$((port + 1))"
        printf 'export VPCD_READER=%q\nexport VPCD_READER2=%q\n' "$NAME 00 00" "$NAME 00 01"
    } >"$dir/env"
    echo "pcscd pid $pid, socket $dir/run/pcscd.comm, vpcd ports $port/$((port + 1))"
}

stop() {
    local dir=$1 f pid
    [ -d "$dir" ] || return 0
    # cards first (they would otherwise retry connecting)
    for f in "$dir"/cards/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f"); kill -TERM "$pid" 2>/dev/null || true; rm -f "$f"
    done
    if [ -f "$dir/pcscd.pid" ]; then
        pid=$(cat "$dir/pcscd.pid")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/pcscd.pid"
    fi
    rm -f "$dir/run/pcscd.comm"
}

# Start a card in reader 0 or 1 of a running private pcscd, wait for "ready".
# State DIR/cards/NAME.json, stdout DIR/cards/NAME.out, log DIR/cards/NAME.log,
# pid DIR/cards/NAME.pid (also printed).  Extra args go to piv_card.py (e.g. --init).
card() {
    local dir=$1 name=$2 idx=$3 port pid i
    shift 3
    [ -f "$dir/env" ] || die "no private pcscd under $dir"
    port=$(. "$dir/env"; [ "$idx" = 1 ] && echo "$VPCD_PORT2" || echo "$VPCD_PORT")
    local c="$dir/cards/$name"
    : >"$c.out"
    "$PY" "$(dirname "$0")/piv_card.py" --state "$c.json" --port "$port" "$@" >"$c.out" 2>"$c.log" &
    pid=$!
    echo "$pid" >"$c.pid"
    for i in $(seq 1 100); do
        grep -q '^ready$' "$c.out" && { echo "$pid"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$c.log" >&2; die "card $name exited"; }
        sleep 0.1
    done
    die "card $name not ready after 10 s (log: $c.log)"
}

case "${1:-}" in
    start) [ $# -ge 2 ] || die "usage: pcscd.sh start DIR [BASEPORT]"; start "$2" "${3:-}";;
    stop)  [ $# -ge 2 ] || die "usage: pcscd.sh stop DIR"; stop "$2";;
    card)  [ $# -ge 4 ] || die "usage: pcscd.sh card DIR NAME 0|1 [piv_card.py args]"; d=$2 n=$3 i=$4; shift 4; card "$d" "$n" "$i" "$@";;
    *) die "usage: pcscd.sh start DIR [BASEPORT] | stop DIR | card DIR NAME 0|1 [args]";;
esac
