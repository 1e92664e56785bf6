#!/usr/bin/env bash
# Puts the host's IPv4 firewall back as it was before a dockerd of ours ran. dockerd (in bridge mode)
# makes its chains, adds rules for its bridge (masquerade, forwarding, published ports), sets FORWARD's
# policy to DROP and ip_forward to 1, and removes none of it when it stops: each run of tests/docker
# left a set behind, and the nat table they keep alive makes conntrack track every loopback connection.
#   host-iptables.sh save FILE      record the tables (iptables-save, in FILE.rules), a summary of
#                                   them and ip_forward (FILE)
#   host-iptables.sh restore FILE   load the saved tables back whole (iptables-restore), delete the
#                                   tables that did not exist then, put ip_forward back
#   host-iptables.sh diff FILE      print what differs from FILE; exit 1 if anything does
# Whatever anyone changed in between is undone too: the callers hold /run/lock/initless-dockerd.lock
# for their daemons' lifetime, so two of ours never overlap.
set -uo pipefail

state() {  # one line per fact: "TABLE exists", "TABLE -N/-A/-P ...", then "ip_forward N" last
    local present t
    present=$(iptables-save) || return 1
    present=$(sed -n 's/^\*//p' <<<"$present")
    for t in filter nat; do
        # (iptables -S on a table that does not exist prints default policies without making it.)
        grep -qx "$t" <<<"$present" || continue
        echo "$t exists"
        iptables -t "$t" -S | sed "s/^/$t /"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || return 1
    done
    echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
}

# A save is whole only if its summary ends with the ip_forward line (written last) and its rules exist:
# restoring from a missing or cut file would take away the host's own rules.
whole() {
    [[ -r $1 && -r $1.rules ]] && tail -n 1 "$1" | grep -q '^ip_forward [0-9]' ||
        { echo "host-iptables: $1 is not a whole save" >&2; exit 2; }
}

# What differs now from save $1, one line each: "gone: FACT" or "added: FACT" (state's facts).
differences() {
    local now
    now=$(state) || return 1
    diff <(sort "$1") <(sort <<<"$now") | grep '^[<>]' | sed 's/^</gone:/; s/^>/added:/'
    return 0
}

case "${1:-} ${2:+file}" in
"save file")
    iptables-save >"$2.rules" || { echo "host-iptables: iptables-save failed" >&2; exit 1; }
    state >"$2" || { echo "host-iptables: cannot read the tables" >&2; exit 1; }
    ;;
"diff file")
    whole "$2"
    d=$(differences "$2") || exit 1
    [[ -z $d ]] || { echo "$d"; exit 1; }
    ;;
"restore file")
    whole "$2"
    d=$(differences "$2") || exit 1
    # Tables made since go first: iptables-restore only rewrites the tables the save names, and
    # iptables-nft cannot delete a table's built-in chains (a nat table left behind hooks conntrack in).
    for t in $(sed -n 's/^added: \([a-z]*\) exists$/\1/p' <<<"$d"); do
        if command -v nft >/dev/null; then nft delete table ip "$t"; else echo "cannot delete table $t: nft is missing (nftables)" >&2; fi
    done
    [[ -s $2.rules ]] && iptables-restore <"$2.rules"
    read -r _ fwd < <(grep '^ip_forward ' "$2") && echo "$fwd" >/proc/sys/net/ipv4/ip_forward
    d=$(differences "$2") && [[ -z $d ]]
    ;;
*) echo "usage: host-iptables.sh save|restore|diff FILE" >&2; exit 2 ;;
esac
