package netaddr

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/nl"
)

// ActCheck says, before anything is frozen, whether an address can leave
// or arrive on an interface of this host.
var ActCheck = host.Action[CheckRequest, CheckResult]{Name: "net.check"}

// CheckRequest asks whether Address can leave Interface (Role "from") or
// arrive on it (Role "to").
type CheckRequest struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Role      string `json:"role"`
}

// CheckResult lists what would make the move fail (Problems) and what
// would make it work less well (Warnings), each a sentence with its fix.
type CheckResult struct {
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

func serveCheck(ctx context.Context, c *host.Call, req CheckRequest) (CheckResult, error) {
	return Check(req)
}

// Check answers req in this network namespace.
func Check(req CheckRequest) (CheckResult, error) {
	var res CheckResult
	prefix, err := netip.ParsePrefix(req.Address)
	if err != nil {
		return res, fmt.Errorf("address %q: %w", req.Address, err)
	}
	ip := prefix.Addr()
	link, err := netlink.LinkByName(req.Interface)
	if _, missing := err.(netlink.LinkNotFoundError); missing {
		res.Problems = append(res.Problems, fmt.Sprintf("it has no interface %q (it has %s)", req.Interface, strings.Join(linkNames(), ", ")))
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("interface %q: %w", req.Interface, err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := nl.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family) })
	if err != nil {
		return res, fmt.Errorf("list addresses: %w", err)
	}
	var here *netlink.Addr
	var elsewhere []string
	for i, a := range addrs {
		if addrOf(a.IP) != ip {
			continue
		}
		if a.LinkIndex == link.Attrs().Index {
			here = &addrs[i]
		} else {
			elsewhere = append(elsewhere, linkName(a.LinkIndex))
		}
	}
	switch req.Role {
	case "from":
		var ones int
		if here != nil {
			ones, _ = here.Mask.Size()
		}
		switch {
		case here == nil && len(elsewhere) > 0:
			res.Problems = append(res.Problems, fmt.Sprintf("%s is on %s, not on %s: set interface to the one that has it",
				ip, strings.Join(elsewhere, ", "), req.Interface))
		case here == nil:
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is not on %s now, so the move only adds it to the target", ip, req.Interface))
		case ones != prefix.Bits():
			res.Problems = append(res.Problems, fmt.Sprintf("%s is on %s as /%d, and the removal of a /%d would fail: give the address as %s/%d",
				ip, req.Interface, ones, prefix.Bits(), ip, ones))
		default:
			if gone := takenAlong(*here, addrs, req.Interface); len(gone) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%s is the primary address of its subnet on %s, and removing it would remove %s too "+
					"(net.ipv4.conf.%s.promote_secondaries is 0): set it to 1, or make another address the primary",
					ip, req.Interface, strings.Join(gone, ", "), req.Interface))
			}
			routes, err := nl.Dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, family) })
			if err != nil {
				return res, fmt.Errorf("list routes: %w", err)
			}
			if !routeStays(ip, addrs, routes) {
				res.Warnings = append(res.Warnings, fmt.Sprintf("once %s leaves, this host has no route to it, so new connections held here during the pause "+
					"cannot follow it and wait for their client's SYN retransmit (1 s or more): keep an address of the subnet on this host, or a route to it", ip))
			}
		}
	case "to":
		if link.Attrs().Flags&net.FlagUp == 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("interface %s is down", req.Interface))
		}
		if ip.Is6() && sysctl("ipv6/conf/"+req.Interface+"/disable_ipv6") == "1" {
			res.Problems = append(res.Problems, fmt.Sprintf("IPv6 is disabled on %s (net.ipv6.conf.%s.disable_ipv6 = 1)", req.Interface, req.Interface))
		}
		if here != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is on %s already, so two hosts answer for it until the move", ip, req.Interface))
		}
		if len(elsewhere) > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is on %s already, and stays there after the move", ip, strings.Join(elsewhere, ", ")))
		}
	default:
		return res, fmt.Errorf("net.check: unknown role %q (want from or to)", req.Role)
	}
	return res, nil
}

// takenAlong lists the IPv4 addresses the kernel removes with primary, a
// subnet's primary address on ifname: its secondaries, unless they are
// promoted (promote_secondaries).
func takenAlong(primary netlink.Addr, addrs []netlink.Addr, ifname string) []string {
	if primary.IP.To4() == nil || primary.Flags&unix.IFA_F_SECONDARY != 0 {
		return nil
	}
	if sysctl("ipv4/conf/all/promote_secondaries") == "1" || sysctl("ipv4/conf/"+ifname+"/promote_secondaries") == "1" {
		return nil
	}
	bits, _ := primary.Mask.Size()
	var gone []string
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if a.LinkIndex == primary.LinkIndex && a.Flags&unix.IFA_F_SECONDARY != 0 && ones == bits && primary.Contains(a.IP) {
			gone = append(gone, a.IPNet.String())
		}
	}
	return gone
}

// routeStays says whether this host still routes to ip once ip's own
// address is gone: another address's subnet holds it, or a route of the
// main table other than the kernel's own subnet routes does.
func routeStays(ip netip.Addr, addrs []netlink.Addr, routes []netlink.Route) bool {
	for _, a := range addrs {
		if addrOf(a.IP) == ip || a.Scope == unix.RT_SCOPE_HOST {
			continue
		}
		if p, ok := prefixOf(a.IPNet); ok && p.Bits() < ip.BitLen() && p.Contains(ip) {
			return true
		}
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue // subnet routes go with their addresses
		}
		if r.Dst == nil {
			return true // a default route
		}
		if p, ok := prefixOf(r.Dst); ok && p.Contains(ip) {
			return true
		}
	}
	return false
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func linkName(index int) string {
	if l, err := netlink.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("interface %d", index)
}

func linkNames() []string {
	links, err := nl.Dump(netlink.LinkList)
	if err != nil {
		return []string{"none that could be listed"}
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// sysctl reads a value under /proc/sys/net; "" if it cannot.
func sysctl(name string) string {
	if strings.Contains(name, "..") {
		return ""
	}
	b, err := os.ReadFile(filepath.Join("/proc/sys/net", name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
