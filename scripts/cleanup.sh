#!/usr/bin/env bash
# Remove what interrupted vsw test, bench and lab runs leave behind. Those runs
# name everything with a "vswt" prefix (namespaces, links, /tmp/vswt* work
# directories holding daemon sockets), so that prefix is the only thing this
# script ever touches. Safe to run any number of times.
#
# usage: scripts/cleanup.sh [-n|--dry-run] [PREFIX]
#   PREFIX  narrower prefix, e.g. vswt3fa1 for one run; must start with vswt
#   -n      print what would be removed, remove nothing
set -u

dry_run=0
prefix=vswt
for arg in "$@"; do
  case "$arg" in
    -n | --dry-run) dry_run=1 ;;
    -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) prefix=$arg ;;
  esac
done
if [[ ! $prefix =~ ^vswt[A-Za-z0-9_.-]*$ ]]; then
  echo "cleanup.sh: prefix \"$prefix\" does not start with vswt: only vswt* leftovers may be removed." >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "cleanup.sh: namespaces and links can only be removed as root: run it with sudo." >&2
  exit 1
fi

removed=0
say() {
  removed=$((removed + 1))
  if ((dry_run)); then echo "(dry run) $*"; else echo "$*"; fi
}

comm_of() { cat "/proc/$1/comm" 2>/dev/null || echo '?'; }

# A zombie still has a /proc entry but is already dead; only its parent can reap it.
alive() {
  local state
  state=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Give processes a second to exit on SIGTERM (a daemon removes its TAPs and socket), then SIGKILL.
terminate() {
  local pid left i
  ((dry_run)) && return
  kill -TERM "$@" 2>/dev/null
  for ((i = 0; i < 20; i++)); do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    ((${#left[@]} == 0)) && return
    sleep 0.05
  done
  kill -KILL "${left[@]}" 2>/dev/null
  sleep 0.1
}

# 1. Daemons and helpers of a run: their command line names a /tmp/vswt* path
#    (the daemon's --socket). First, because a live daemon would recreate what
#    the next steps remove.
self_pids=" $$ $PPID ${BASHPID:-$$} "
strays=()
for dir in /proc/[0-9]*; do
  pid=${dir#/proc/}
  [[ $self_pids == *" $pid "* ]] && continue
  # The group's redirection: a process gone since the glob must not print bash's own error for the input file.
  cmdline=$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null) || continue
  [[ $cmdline == *"/tmp/$prefix"* ]] || continue
  [[ $cmdline == *cleanup.sh* ]] && continue
  alive "$pid" || continue
  strays+=("$pid")
  say "killed process $pid ($(comm_of "$pid")): ${cmdline% }"
done
((${#strays[@]})) && terminate "${strays[@]}"

# 1b. What stopped daemons of a run left in place on purpose (a stop keeps TAPs, compartments, host
#     TAPs, nftables tables and ip_forward for the next daemon): `vsw system reset` for each state
#     directory, run in the network namespace the state was saved in (host interfaces, tables and
#     ip_forward are that namespace's). A state whose namespace is gone went with it (step 2 removes
#     the rest by name).
cli="$(cd "$(dirname "$0")/.." && pwd)/dist/src/cli/main.js"
if [[ -f $cli ]] && command -v node >/dev/null 2>&1; then
  for state in /tmp/"$prefix"*/state /tmp/"$prefix"*/*/state /run/vsw-lab/"$prefix"*.state; do
    [[ -f $state/state.json ]] || continue
    saved_ns=$(sed -n 's/.*"netns":"net:\[\([0-9]*\)\]".*/\1/p' "$state/state.json")
    runner=()
    if [[ -n $saved_ns && $saved_ns != "$(stat -L -c %i /proc/self/ns/net)" ]]; then
      for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $(stat -L -c %i "/run/netns/$ns" 2>/dev/null) == "$saved_ns" ]] && runner=(ip netns exec "$ns") && break
      done
      ((${#runner[@]})) || continue
    fi
    if ((dry_run)); then say "would run vsw system reset --state-dir $state ${runner[*]:+(in ${runner[2]})}"; continue; fi
    while IFS= read -r line; do say "$line (vsw system reset --state-dir $state)"; done < <("${runner[@]}" node "$cli" system reset --state-dir "$state" 2>&1)
  done
fi

# 2. Namespaces: kill what still runs inside, or the namespace outlives its name.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  [[ $ns == "$prefix"* ]] || continue
  pids=($(ip netns pids "$ns" 2>/dev/null))
  for pid in "${pids[@]}"; do
    say "killed process $pid ($(comm_of "$pid")) in network namespace $ns"
  done
  ((${#pids[@]})) && terminate "${pids[@]}"
  # A failed delete is fine if someone else removed it meanwhile.
  if ((!dry_run)) && ! ip netns delete "$ns" 2>/dev/null && [[ -e /run/netns/$ns ]]; then
    echo "cleanup.sh: could not delete network namespace $ns: run \"ip netns delete $ns\" to see why." >&2
    continue
  fi
  say "deleted network namespace $ns"
done

# 3. Links in the host namespace (veth ends, persistent TAPs, bridges of bench baselines).
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'); do
  [[ $link == "$prefix"* ]] || continue
  # Deleting one end of a veth already took its peer with it.
  ip link show dev "$link" >/dev/null 2>&1 || continue
  if ((!dry_run)) && ! ip link delete dev "$link" 2>/dev/null; then
    echo "cleanup.sh: could not delete link $link: run \"ip link delete dev $link\" to see why." >&2
    continue
  fi
  say "deleted link $link"
done

# 3b. nftables tables of nat networks named with the prefix (vsw_nat_<host interface>), left by a
#     daemon that was killed before it could remove them. net.ipv4.ip_forward is left as it is:
#     whether it was on before the run is not known here.
# nftables' nft from the system's directories: under `npm run`, PATH starts with node_modules/.bin,
# where a JavaScript tool of the same name answers anything with exit 0.
nft=
for candidate in /usr/sbin/nft /sbin/nft /usr/local/sbin/nft /usr/bin/nft; do
  [[ -x $candidate ]] && { nft=$candidate; break; }
done
if [[ -n $nft ]]; then
  # vsw_pub_<host interface>: the DNAT of ports published through the CNI plugin.
  nat_prefix="vsw_nat_${prefix//[^A-Za-z0-9_]/_}"
  pub_prefix="vsw_pub_${prefix//[^A-Za-z0-9_]/_}"
  for table in $("$nft" list tables ip 2>/dev/null | awk '{print $3}'); do
    [[ $table == "$nat_prefix"* || $table == "$pub_prefix"* ]] || continue
    if ((!dry_run)) && ! "$nft" delete table ip "$table" 2>/dev/null; then
      echo "cleanup.sh: could not delete nftables table ip $table: run \"nft delete table ip $table\" to see why." >&2
      continue
    fi
    say "deleted nftables table ip $table"
  done
fi

# 3c. What container runtimes of a run left: mounts under its directories (podman's and dockerd's
#     storage, docker's sandbox namespaces), unmounted deepest first so that step 4 removes only
#     files; and CNI configs the runtime tests put in the host-wide /etc/cni/net.d.
for mnt in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^/tmp/$prefix" | sort -r); do
  if ((!dry_run)) && ! umount "$mnt" 2>/dev/null && ! umount -l "$mnt" 2>/dev/null; then
    echo "cleanup.sh: could not unmount $mnt: run \"umount $mnt\" to see why." >&2
    continue
  fi
  say "unmounted $mnt"
done
for conf in /etc/cni/net.d/*"$prefix"*.conflist; do
  [[ -e $conf ]] || continue
  ((dry_run)) || rm -f -- "$conf"
  say "removed $conf"
done

# 4. Work directories (sockets, state files, logs), and what a killed `scripts/lab up --prefix vswt...`
#    (the lab test, the bench's overlay scenario) left in /run/vsw-lab.
for path in /tmp/"$prefix"* /run/vsw-lab/"$prefix"*; do
  [[ -e $path || -L $path ]] || continue
  kind=file
  [[ -d $path && ! -L $path ]] && kind=directory
  ((dry_run)) || rm -rf -- "$path"
  say "removed $kind $path"
done

((removed == 0)) && echo "nothing to clean up"
exit 0
