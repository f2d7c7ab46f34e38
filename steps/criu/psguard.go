package criu

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
// from any address but from. In nft's words:
//
//	table inet mig-ps-PORT { chain input { type filter hook input priority -20; policy accept;
//		tcp dport PORT ip saddr != FROM reject with tcp reset
//		tcp dport PORT meta nfproto ipv6 reject with tcp reset
//	} }
//
// (ip6 and ipv4 for an IPv6 from).
func guardPort(_ context.Context, port int, from string) error {
	ip, err := netip.ParseAddr(from)
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("guard page server port %d: %q is not an IP address", port, from)
	}
	ip = ip.Unmap()
	// The source address: 4 bytes at 12 in an IPv4 header, 16 at 8 in an
	// IPv6 one.
	family, other := nfprotoV4, nfprotoV6
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	if ip.Is6() {
		family, other = nfprotoV6, nfprotoV4
		saddr.Offset, saddr.Len = 8, 16
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("guard page server port %d: nftables: %w", port, err)
	}
	// Replacing the table replaces a guard a dead run left.
	t, err := nftReplace(c, guardTable(port))
	if err != nil {
		return err
	}
	input := nftBaseChain(c, t, "input", nftables.ChainHookInput, -20)
	dport, _ := tcpPorts(c, t, tcpDport, []int{port})
	c.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: nftRule(dport, family, []expr.Any{
		saddr,
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ip.AsSlice()},
		nftTCPReset,
	})})
	c.AddRule(&nftables.Rule{Table: t, Chain: input, Exprs: nftRule(dport, other, []expr.Any{nftTCPReset})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("guard page server port %d: %w", port, err)
	}
	return nil
}

// unguardPort removes the guard of port, if it is there.
func unguardPort(_ context.Context, port int) error {
	if port <= 0 {
		return nil
	}
	if err := DeleteNftTable(nil, guardTable(port)); err != nil {
		return fmt.Errorf("remove the guard of page server port %d: %w", port, err)
	}
	return nil
}
