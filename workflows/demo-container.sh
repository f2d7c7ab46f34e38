#!/usr/bin/env bash
# The container demo (`make demo-container`): build a lab of two hosts on this
# machine, start a runc container running the counter with 256 MiB of
# ballast on h1 behind a service address, move it to h2 with
# workflows/container-live.hcl (or the workflow given) while a probe watches
# the service, show that its state arrived, and take the lab down again.
#
# The container is started with the runc CLI, as an operator would, and mig
# adopts it: it shares h1's network, its stdio are pipes (CRIU re-wires only
# pipes), and its bundle lies under the lab dir, which both hosts see.
#
#   workflows/demo-container.sh [WORKFLOW]
#
# LAB_NAME and LAB_SUBNET (a /24) choose another lab than `mig lab up`'s
# default (lab, 10.77.0.0/24).
set -euo pipefail
cd "$(dirname "$0")/.."
MIG=${MIG:-bin/mig}
COUNTER=$(pwd)/bin/counter
WORKFLOW=${1:-workflows/container-live.hcl}
NAME=${LAB_NAME:-lab}
SUBNET=${LAB_SUBNET:-10.77.0.0/24}
NET=${SUBNET%.0/24}
LAB=/var/lib/mig-lab/$NAME
VIP=$NET.100
ID=web
RESTORE_ID=web-moved
BUNDLE=$LAB/bundles/$ID
# The run's record and report stay in the clone, after the lab is gone.
STATE=$(pwd)/.mig
VARS=(-var "lab=$LAB" -var "source_address=$NET.11:22" -var "target_address=$NET.12:22"
	-var "service_ip=$VIP" -var "container_id=$ID" -var "restore_id=$RESTORE_ID" -var "bundle=$BUNDLE")

say() { printf '\n== %s\n' "$*"; }
count() { curl -s --max-time 2 "http://$VIP:8080$1"; }
lab() { "$MIG" lab "$1" -name "$NAME" "${@:2}"; }
# state HOST ID prints the container's status, or "none".
state() { lab exec "$1" -- sh -c 'runc state "$0" 2>/dev/null | sed -n "s/.*\"status\": \"\(.*\)\".*/\1/p" | grep . || echo none' "$2"; }

cleanup() {
	say "Taking the lab down"
	# The lab hosts share the machine's cgroupfs: remove the containers, and
	# with them their cgroups, before their hosts go.
	for h in h1 h2; do
		for id in "$ID" "$RESTORE_ID"; do
			lab exec "$h" -- runc delete -f "$id" >/dev/null 2>&1 || true
		done
	done
	lab down
	for id in "$ID" "$RESTORE_ID"; do
		rmdir /sys/fs/cgroup/*/"$id" 2>/dev/null || true
	done
	rm -rf "$BUNDLE"
}
trap cleanup EXIT

say "Bringing the lab up"
lab up -subnet "$SUBNET"
"$MIG" doctor -fix -host h1 "${VARS[@]}" "$WORKFLOW" >/dev/null 2>&1 || true

say "Building the bundle in $BUNDLE (busybox rootfs, the counter, config.json)"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"/rootfs/{bin,proc,dev,sys,tmp,etc,root}
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
/usr/sbin/chroot "$BUNDLE/rootfs" /bin/busybox --install -s /bin
cp "$COUNTER" "$BUNDLE/rootfs/bin/counter"
echo 'root:x:0:0:root:/root:/bin/sh' >"$BUNDLE/rootfs/etc/passwd"
echo 'root:x:0:' >"$BUNDLE/rootfs/etc/group"
# No network namespace: the container uses its host's network. No terminal:
# CRIU cannot checkpoint one.
cat >"$BUNDLE/config.json" <<EOF
{
	"ociVersion": "1.0.2",
	"process": {
		"terminal": false,
		"user": {"uid": 0, "gid": 0},
		"args": ["/bin/counter", "-listen", ":8080", "-ballast", "256"],
		"env": ["PATH=/bin"],
		"cwd": "/",
		"noNewPrivileges": true
	},
	"root": {"path": "$BUNDLE/rootfs", "readonly": false},
	"hostname": "$ID",
	"mounts": [
		{"destination": "/proc", "type": "proc", "source": "proc"},
		{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
		{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
	],
	"linux": {
		"resources": {"devices": [{"allow": false, "access": "rwm"}]},
		"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
	}
}
EOF

say "Starting container $ID (256 MiB of ballast) on h1 behind $VIP"
lab exec h1 -- ip addr add "$VIP/24" dev eth0
ip neigh flush to "$VIP" 2>/dev/null || true
# runc -d hands its own stdio to the container: an empty pipe in, and a pipe
# out that cat keeps draining into a log on h1.
lab start -log /var/lib/mig/web-stdio.log h1 -- sh -c ': | runc run -d --bundle "$0" "$1" 2>&1 | cat' "$BUNDLE" "$ID" >/dev/null
for _ in $(seq 100); do count / >/dev/null && break; sleep 0.1; done
sleep 1
before=$(count /)
echo "container $ID on h1: $(state h1 "$ID"); count: $before; /check: $(count /check)"

say "mig plan $WORKFLOW"
"$MIG" plan -state-dir "$STATE" "${VARS[@]}" "$WORKFLOW"

say "mig apply $WORKFLOW"
"$MIG" apply -report -state-dir "$STATE" "${VARS[@]}" "$WORKFLOW"
# Run IDs start with their UTC time: the last one is this run's.
RUN=$(ls "$STATE/runs" | sort | tail -n 1)

say "After the move"
after=$(count /)
check=$(count /check)
echo "count: $before before the move, $after now; /check: $check"
h1=$(state h1 "$ID")
h2=$(state h2 "$RESTORE_ID")
echo "container $ID on h1: $h1; container $RESTORE_ID on h2: $h2"
sleep 0.2
again=$(count /)
if [ "$check" = ok ] && [ "$after" -gt "$before" ] && [ "$again" -gt "$after" ] && [ "$h1" = none ] && [ "$h2" = running ]; then
	echo "The container kept counting on h2 ($after → $again) and its 256 MiB of ballast arrived intact."
else
	echo "The migration did not deliver the container's state." >&2
	exit 1
fi

say "The record and the report of the move (kept after the lab goes down)"
echo "  record: $STATE/runs/$RUN/record.json"
echo "  report: $STATE/runs/$RUN/report.html (open it in a browser; it needs no network)"
echo "  bin/mig show -state-dir .mig $RUN"
