package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/nl"
)

// ensureBridge creates the lab's bridge with the gateway address, or
// checks the one that exists.
func ensureBridge(name string, gw netip.Prefix) (netlink.Link, error) {
	br, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = netlink.LinkByName(name); err != nil {
			return nil, err
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%s exists and is a %s, not a bridge", name, br.Type())
	}
	if err := netlink.AddrReplace(br, addrOf(gw)); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bridge %s up: %w", name, err)
	}
	return br, nil
}

func addrOf(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), 32),
	}}
}

// plugHost creates a veth pair whose peer is eth0 in the network namespace
// of pid, attaches the root end to the bridge, and gives eth0 its address
// and a default route through the gateway.
func plugHost(br netlink.Link, veth string, pid int, addr netip.Prefix, gw netip.Addr) error {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: veth, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsPid(pid),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s: %w", veth, err)
	}
	root, err := netlink.LinkByName(veth)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(root); err != nil {
		return fmt.Errorf("veth %s up: %w", veth, err)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0 in host: %w", err)
	}
	if err := h.AddrAdd(eth, addrOf(addr)); err != nil {
		return fmt.Errorf("address %s on eth0: %w", addr, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(gw.AsSlice())}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// sweepLinks deletes the lab's bridge and every veth named after the lab.
func sweepLinks(lab string) error {
	links, err := nl.Dump(netlink.LinkList)
	if err != nil {
		return err
	}
	prefix := vethName(lab, 0)
	prefix = prefix[:len(prefix)-1]
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if name == bridgeName(lab) || (strings.HasPrefix(name, prefix) && isDigits(name[len(prefix):])) {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// linkUp reports whether the named link exists and is up.
func linkUp(name string) bool {
	l, err := netlink.LinkByName(name)
	return err == nil && l.Attrs().Flags&net.FlagUp != 0
}
