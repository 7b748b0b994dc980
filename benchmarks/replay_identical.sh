#!/usr/bin/env bash
# Replay outputs of two source trees, compared file by file: the demo's output and, for
# workloads A, B and A through SNAT (500 flows, 20,000 packets), every output file of both
# compiled modes except stats.json (timings).
#     benchmarks/replay_identical.sh OLD_CHECKOUT NEW_CHECKOUT
# (e.g. a `git worktree add /tmp/old <commit>`); each tree compiles its kernels on first use.
set -u
OLD=$1; NEW=$2; W=$(mktemp -d /tmp/replay-identical-XXXX)
cd "$W"
for wl in "A a" "B b" "S a --nat snat"; do
  set -- $wl
  PYTHONPATH=$NEW/src python3 -m ctaccel.cli gen --workload $2 ${3:-} ${4:-} --flows 500 \
    --packets 20000 --out-dir "$W/$1" >/dev/null
done
for t in old new; do
  src=$OLD; [ $t = new ] && src=$NEW
  PYTHONPATH=$src/src python3 -m ctaccel.cli 2>/dev/null | grep -v "All inputs and outputs" > "$W/demo-$t.txt"
  for wl in A B S; do for mode in assume-established recirc; do
    P=$(ls "$W/$wl"/*.pcap); F=$(ls "$W/$wl"/*.ct.flows)
    PYTHONPATH=$src/src python3 -m ctaccel.cli replay --flows "$F" --in "1=$P" --mode $mode \
      --out-dir "$W/$t-$wl-$mode" --quiet 2>/dev/null
  done; done
done
status=0
cmp -s "$W/demo-old.txt" "$W/demo-new.txt" && echo "demo: identical" || { echo "demo: DIFFERS"; status=1; }
for wl in A B S; do for mode in assume-established recirc; do
  files=$(cd "$W/old-$wl-$mode" && ls | grep -v stats.json)
  bad=0
  for f in $files; do cmp -s "$W/old-$wl-$mode/$f" "$W/new-$wl-$mode/$f" || { echo "$wl $mode $f DIFFERS"; bad=1; }; done
  [ $bad = 0 ] && echo "$wl $mode: identical ($(echo $files | tr '\n' ' '))" || status=1
done; done
rm -rf "$W"
exit $status
