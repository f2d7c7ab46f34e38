package criu

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// CRIU's page server takes the first connection to its port and serves
// the process's memory to it, or writes what it sends into the images.
// guardPort admits only the peer's address to that port: anyone else's
// connection is reset before CRIU sees it. The table is named after the
// port, so that a guard a dead run left is replaced by the next page
// server on that port.

// guardTable names the guard of port.
func guardTable(port int) string { return fmt.Sprintf("inet mig-ps-%d", port) }

// guardPort makes this network namespace reset TCP connections to port
// from any address but from.
func guardPort(ctx context.Context, port int, from string) error {
	ip := net.ParseIP(from)
	if ip == nil {
		return fmt.Errorf("guard page server port %d: %q is not an IP address", port, from)
	}
	family, other := "ip", "ipv6"
	if ip.To4() == nil {
		family, other = "ip6", "ipv4"
	}
	table := guardTable(port)
	// Deleting first makes the script replace a guard a dead run left.
	script := fmt.Sprintf("table %[1]s\ndelete table %[1]s\ntable %[1]s {\n\tchain input {\n\t\ttype filter hook input priority -20; policy accept;\n"+
		"\t\ttcp dport %[2]d %[3]s saddr != %[4]s reject with tcp reset\n"+
		"\t\ttcp dport %[2]d meta nfproto %[5]s reject with tcp reset\n\t}\n}\n", table, port, family, ip, other)
	cmd := nftCmd(ctx, nil, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("guard page server port %d: %v: %s", port, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// unguardPort removes the guard of port, if it is there.
func unguardPort(ctx context.Context, port int) error {
	if port <= 0 {
		return nil
	}
	table := guardTable(port)
	if !nftTableExists(ctx, table) {
		return nil
	}
	out, err := nft(ctx, nil, append([]string{"delete", "table"}, strings.Fields(table)...)...)
	if err != nil {
		return fmt.Errorf("remove the guard of page server port %d: %v: %s", port, err, strings.TrimSpace(out))
	}
	return nil
}
