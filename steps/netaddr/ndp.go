package netaddr

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// An IPv6 address is announced as ARP announces an IPv4 one: with an
// unsolicited neighbour advertisement (RFC 4861, 7.2.6) to all nodes on the
// link, with the override flag, so that a neighbour that has the address
// in its cache sends to this host from now on.

// allNodes is the link's all-nodes multicast group, ff02::1.
var allNodes = netip.MustParseAddr("ff02::1")

// advertSender sends unsolicited neighbour advertisements for ip out of ifi.
func advertSender(ifi *net.Interface, ip netip.Addr) (send func() error, closeFn func(), err error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, nil, fmt.Errorf("ICMPv6 socket: %w", err)
	}
	fail := func(what string, err error) (func() error, func(), error) {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ICMPv6 socket: %s: %w", what, err)
	}
	// Neighbours take a neighbour discovery message only from the link
	// itself: with a hop limit of 255.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
		return fail("hop limit", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); err != nil {
		return fail("interface", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0); err != nil {
		return fail("loop", err)
	}
	// From the address itself where it can be (it was added without
	// duplicate address detection); else the kernel picks the link's.
	unix.Bind(fd, &unix.SockaddrInet6{Addr: ip.As16()})
	to := &unix.SockaddrInet6{Addr: allNodes.As16(), ZoneId: uint32(ifi.Index)}
	msg := advertisement(ifi.HardwareAddr, ip)
	return func() error { return unix.Sendto(fd, msg, 0, to) }, func() { unix.Close(fd) }, nil
}

// advertisement is an ICMPv6 neighbour advertisement of target at mac,
// unsolicited and overriding. The kernel fills in the checksum.
func advertisement(mac net.HardwareAddr, target netip.Addr) []byte {
	const (
		typeNeighborAdvert = 136
		flagOverride       = 0x20 // in the first byte of the flags
		optTargetLinkAddr  = 2
	)
	b := make([]byte, 0, 32)
	b = append(b, typeNeighborAdvert, 0, 0, 0) // type, code, checksum
	b = append(b, flagOverride, 0, 0, 0)       // flags, reserved
	t := target.As16()
	b = append(b, t[:]...)
	b = append(b, optTargetLinkAddr, 1) // length in units of 8 bytes
	b = append(b, mac...)
	return b
}
