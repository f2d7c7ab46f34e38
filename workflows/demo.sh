#!/usr/bin/env bash
# The default demo (`make demo`): build a lab of two hosts on this machine,
# start the counter with 256 MiB of ballast on h1 behind a service address,
# move it to h2 with workflows/live.hcl while a probe watches the service,
# show that its state arrived, and take the lab down again. The run's record
# and its HTML report stay in the clone's .mig directory, for `mig show` and
# `mig report`.
set -euo pipefail
cd "$(dirname "$0")/.."
MIG=${MIG:-bin/mig}
LAB=/var/lib/mig-lab/lab
# Lab hosts have their own /root and /tmp, where clones often live: the
# counter runs from the lab's directory, which every host sees.
COUNTER=$LAB/bin/counter
STATE=$(pwd)/.mig
VIP=10.77.0.100
WORKFLOW=${1:-workflows/live.hcl}

say() { printf '\n== %s\n' "$*"; }
count() { curl -s --max-time 2 "http://$VIP:8080$1"; }

cleanup() {
	say "Taking the lab down"
	"$MIG" lab down
}
trap cleanup EXIT

say "Bringing the lab up"
"$MIG" lab up
"$MIG" doctor -fix -host h1 "$WORKFLOW" >/dev/null 2>&1 || true
install -D -m 0755 bin/counter "$COUNTER"

say "Starting the counter (256 MiB of ballast) on h1 behind $VIP"
"$MIG" lab exec h1 -- ip addr add "$VIP/24" dev eth0
ip neigh flush to "$VIP" 2>/dev/null || true
"$MIG" lab start -pidfile "$LAB/counter.pid" h1 -- "$COUNTER" -listen :8080 -ballast 256 >/dev/null
for _ in $(seq 100); do count / >/dev/null && break; sleep 0.1; done
sleep 1
before=$(count /)
echo "count on h1: $before; /check: $(count /check)"

say "mig plan $WORKFLOW"
"$MIG" plan -state-dir "$STATE" "$WORKFLOW"

say "mig apply $WORKFLOW"
"$MIG" apply -report -state-dir "$STATE" "$WORKFLOW"
# Run IDs start with their UTC time: the last one is this run's.
RUN=$(ls "$STATE/runs" | sort | tail -n 1)

say "After the move"
after=$(count /)
check=$(count /check)
echo "count: $before before the move, $after now; /check: $check"
h1=$("$MIG" lab exec h1 -- sh -c "pgrep -c -f '^$COUNTER' || true")
h2=$("$MIG" lab exec h2 -- sh -c "pgrep -c -f '^$COUNTER' || true")
echo "counter processes: h1 $h1, h2 $h2"
sleep 0.2
again=$(count /)
if [ "$check" = ok ] && [ "$after" -gt "$before" ] && [ "$again" -gt "$after" ] && [ "$h1" = 0 ] && [ "$h2" = 1 ]; then
	echo "The counter kept counting on h2 ($after → $again) and its 256 MiB of ballast arrived intact."
else
	echo "The migration did not deliver the counter's state." >&2
	exit 1
fi

say "The record and the report of the move (kept after the lab goes down)"
echo "  record: $STATE/runs/$RUN/record.json"
echo "  report: $STATE/runs/$RUN/report.html (open it in a browser; it needs no network)"
echo "  bin/mig show -state-dir .mig $RUN"
echo "  bin/mig report -format md -state-dir .mig $RUN"
