package criu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// nftTable is the table CRIU's nftables network lock creates for a dump of
// the tree rooted at pid.
func nftTable(pid int) string { return fmt.Sprintf("inet CRIU-%d", pid) }

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

func nft(ctx context.Context, netns *os.File, args ...string) (string, error) {
	var cmd *exec.Cmd
	if netns != nil {
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/self/fd/3", "nft"}, args...)...)
		cmd.ExtraFiles = []*os.File{netns}
	} else {
		cmd = exec.CommandContext(ctx, "nft", args...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
