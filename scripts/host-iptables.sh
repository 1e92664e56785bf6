#!/usr/bin/env bash
# Puts the host's IPv4 firewall back as it was before a dockerd of ours ran. dockerd (in bridge mode)
# makes its chains, adds rules for its bridge (masquerade, forwarding, published ports), sets FORWARD's
# policy to DROP and ip_forward to 1, and removes none of it when it stops: each run of tests/docker
# left a set behind, and the nat table they keep alive makes conntrack track every loopback connection.
#   host-iptables.sh save FILE      record tables, chains, rules, policies and ip_forward now
#   host-iptables.sh restore FILE   remove the rules and chains added since, put the policies and
#                                   ip_forward back, delete the tables that did not exist then
#   host-iptables.sh diff FILE      print what differs from FILE; exit 1 if anything does
# Whatever anyone added in between is removed too: meant for a test that owns the host while it runs.
set -uo pipefail

state() {  # one line per fact: "TABLE exists", "TABLE -N/-A/-P ...", "ip_forward N"
    local present t
    present=$(iptables-save 2>/dev/null | sed -n 's/^\*//p')
    for t in filter nat; do
        # (iptables -S on a table that does not exist prints default policies without making it.)
        grep -qx "$t" <<<"$present" || continue
        echo "$t exists"
        iptables -t "$t" -S | sed "s/^/$t /"
    done
    echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
}

added() { comm -13 <(sort "$1") <(state | sort); }

case "${1:-} ${2:+file}" in
"save file") state >"$2" ;;
"diff file")
    d=$(diff <(sort "$2") <(state | sort) | grep '^[<>]' | sed 's/^</gone:/; s/^>/added:/')
    [[ -z $d ]] || { echo "$d"; exit 1; }
    ;;
"restore file")
    new=$(added "$2")
    # Rules first: a chain can go only once nothing jumps to it. (-S quotes as a shell would: eval.)
    while read -r t op rest; do
        [[ $op == -A ]] && eval "iptables -t $t -D $rest"
    done <<<"$new"
    while read -r t op chain; do
        [[ $op == -N ]] && iptables -t "$t" -F "$chain" && iptables -t "$t" -X "$chain"
    done <<<"$new"
    while read -r t op chain policy; do
        [[ $op == -P ]] && iptables -t "$t" -P "$chain" "$policy"
    done < <(grep -E '^[a-z]+ -P ' "$2")
    read -r _ fwd < <(grep '^ip_forward ' "$2") && echo "$fwd" >/proc/sys/net/ipv4/ip_forward
    # A table made since: its built-in chains stay after the rules go (a nat table among them hooks
    # conntrack into every packet); only nft deletes a table.
    while read -r t what; do
        [[ $what == exists ]] || continue
        if command -v nft >/dev/null; then nft delete table ip "$t"; else echo "cannot delete table $t: nft is missing (nftables)" >&2; fi
    done <<<"$new"
    [[ -z $(added "$2") ]]
    ;;
*) echo "usage: host-iptables.sh save|restore|diff FILE" >&2; exit 2 ;;
esac
