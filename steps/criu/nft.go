package criu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// lockTable finds the table CRIU's nftables network lock created for the
// dump whose log is logPath, in pid's network namespace. CRIU names it
// after the first characters of its run id ("inet CRIU-932449b8-cc88-…").
func lockTable(ctx context.Context, pid int, logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	// swrk logs its own run id first, then the worker's.
	ids := runID.FindAllSubmatch(b, -1)
	if len(ids) == 0 {
		return ""
	}
	netns := nsOf(pid, "net")
	if netns != nil {
		defer netns.Close()
	}
	out, err := nft(ctx, netns, "list", "tables")
	if err != nil {
		return ""
	}
	for i := len(ids) - 1; i >= 0; i-- {
		full := "CRIU-" + string(ids[i][1])
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "table" && len(f[2]) > len("CRIU-") && strings.HasPrefix(full, f[2]) {
				return f[1] + " " + f[2]
			}
		}
	}
	return ""
}

var runID = regexp.MustCompile(`CRIU run id = ([0-9a-f-]+)`)

// nsOf opens pid's namespace of the given type, or returns nil when pid is
// in the same one as mig (or gone).
func nsOf(pid int, typ string) *os.File {
	if pid <= 0 {
		return nil
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, typ))
	if err != nil {
		return nil
	}
	ours, _ := os.Readlink("/proc/self/ns/" + typ)
	if theirs == ours {
		return nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, typ))
	if err != nil {
		return nil
	}
	return f
}

// dropNftTable removes CRIU's lock table from pid's network namespace.
func dropNftTable(ctx context.Context, pid int, table string) error {
	return dropNftTableIn(ctx, nsOf(pid, "net"), table)
}

// dropNftTableIn removes table from the network namespace netns (nil: this
// one) if it exists, and closes netns.
func dropNftTableIn(ctx context.Context, netns *os.File, table string) error {
	if netns != nil {
		defer netns.Close()
	}
	if table == "" {
		return nil
	}
	if _, err := nft(ctx, netns, append([]string{"list", "table"}, strings.Fields(table)...)...); err != nil {
		return nil // no such table: nothing to unlock
	}
	if out, err := nft(ctx, netns, append([]string{"delete", "table"}, strings.Fields(table)...)...); err != nil {
		return fmt.Errorf("remove network lock %q: %v: %s", table, err, strings.TrimSpace(out))
	}
	return nil
}

// nftTableExists says whether table exists in this network namespace.
func nftTableExists(ctx context.Context, table string) bool {
	_, err := nft(ctx, nil, append([]string{"list", "table"}, strings.Fields(table)...)...)
	return err == nil
}

// HoldPorts starts a guard in the network namespace of pid that holds,
// drops or refuses new TCP connections to ports (the workload's
// new_connections setting) until StopGuard. A frozen server's kernel would
// otherwise accept them into the listen backlog, and they would be lost
// with the dump (CRIU skips in-flight connections). Held SYNs go to the
// resumed listener, or follow the service address when it moves.
func HoldPorts(ctx context.Context, pid int, ports []int, setting string) (string, error) {
	if len(ports) == 0 {
		return "", nil
	}
	mode, how, err := NewConnections(setting)
	if err != nil {
		return "", err
	}
	spec := GuardSpec{Table: holdTable(pid), Ports: ports, NewConnections: mode, Queue: how, WatchPID: pid}
	if _, err := StartGuard(ctx, pid, spec); err != nil {
		return "", fmt.Errorf("%s new connections to ports %v: %w", mode, ports, err)
	}
	// Connections whose handshake ended before the guard came are in
	// the listen backlog, where the dump would lose them: let the
	// workload, still running, accept them first.
	waitAccepted(ctx, pid, ports, 250*time.Millisecond)
	return spec.Table, nil
}

// GuardTable names the guard a target keeps for workload w until its
// restore ends.
func GuardTable(w Workload) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, w.Kind+"-"+w.Name)
	return "inet mig-guard-" + name
}

// holdTable names the table HoldPorts makes for pid.
func holdTable(pid int) string { return fmt.Sprintf("inet mig-hold-%d", pid) }

// ListenPorts returns the TCP ports a tree of processes listens on.
func ListenPorts(pids []int) []int { return listenPorts(pids) }

func nft(ctx context.Context, netns *os.File, args ...string) (string, error) {
	out, err := nftCmd(ctx, netns, args...).CombinedOutput()
	return string(out), err
}

// nftCmd runs nft in netns (nil: this namespace).
func nftCmd(ctx context.Context, netns *os.File, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if netns != nil {
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/self/fd/3", "nft"}, args...)...)
		cmd.ExtraFiles = []*os.File{netns}
	} else {
		cmd = exec.CommandContext(ctx, "nft", args...)
	}
	return cmd
}
