// Package netaddr moves service addresses between hosts: the net.addr
// agent action, which the move_ip step calls and mig's agent serves.
package netaddr

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/engine/nl"
)

// Act adds, removes or looks up an address on an interface.
var Act = host.Action[Request, Result]{Name: "net.addr"}

// Actions serves Act and ActCheck.
func Actions() []host.Entry {
	return []host.Entry{Act.Serve(addr), ActCheck.Serve(serveCheck)}
}

// Request adds, removes or looks up an address on an interface.
type Request struct {
	Op        string `json:"op"`        // "add", "del" or "show"
	Address   string `json:"address"`   // CIDR, such as 10.77.0.100/24
	Interface string `json:"interface"` // such as eth0
	// Announce is the number of gratuitous ARPs (for IPv6, unsolicited
	// neighbour advertisements) sent after an add, so that neighbours
	// send to this host at once.
	Announce int `json:"announce,omitempty"`
	// Hold, when set, is the run's lease on this host: Undo is recorded
	// there before the change, so the host puts things back should mig
	// die.
	Hold *host.HoldRef `json:"hold,omitempty"`
	Undo *Request      `json:"undo,omitempty"`
}

// Result says what was there before the call.
type Result struct {
	Present   bool `json:"present"` // the address was on the interface before the call
	Announced int  `json:"announced,omitempty"`
}

// announceGap spaces the gratuitous ARPs. The add sends the first and
// returns; the gap is short all the same: repeats guard against a lost
// frame, not against a slow neighbour.
const announceGap = 2 * time.Millisecond

// addr serves Act. Adding an address that is there and removing one that
// is not are not errors, so a retried step converges.
func addr(ctx context.Context, c *host.Call, req Request) (Result, error) {
	prefix, err := netip.ParsePrefix(req.Address)
	if err != nil {
		return Result{}, fmt.Errorf("address %q: %w", req.Address, err)
	}
	link, err := netlink.LinkByName(req.Interface)
	if err != nil {
		return Result{}, fmt.Errorf("interface %q: %w", req.Interface, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(prefix.Addr().AsSlice()),
		Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen()),
	}}
	if prefix.Addr().Is6() {
		// Duplicate address detection would keep a moved address
		// tentative, unusable, for a second: it has just left the host
		// that had it.
		a.Flags = unix.IFA_F_NODAD
	}
	present, err := hasAddr(link, prefix.Addr())
	if err != nil {
		return Result{}, err
	}
	res := Result{Present: present}
	if req.Hold != nil && req.Undo != nil && req.Op != "show" {
		undo := *req.Undo
		if err := req.Hold.Add(host.LeaseEntry{Undo: []host.Invocation{Act.Invocation("", undo, "")}}); err != nil {
			return Result{}, fmt.Errorf("record how to undo in the hold: %w", err)
		}
	}
	switch req.Op {
	case "show":
	case "del":
		if present {
			if err := netlink.AddrDel(link, a); err != nil {
				return Result{}, fmt.Errorf("remove %s from %s: %w", req.Address, req.Interface, err)
			}
			c.Log.Info("address removed", "address", req.Address, "interface", req.Interface)
		}
	case "add":
		if !present {
			if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
				return Result{}, fmt.Errorf("add %s to %s: %w", req.Address, req.Interface, err)
			}
			c.Log.Info("address added", "address", req.Address, "interface", req.Interface)
		}
		if req.Announce > 0 {
			n, err := announce(ctx, req.Interface, prefix.Addr(), 1)
			res.Announced = n
			if err != nil {
				return res, fmt.Errorf("announce %s on %s: %w", prefix.Addr(), req.Interface, err)
			}
			// The repeats guard against a lost frame: the move, and so
			// the pause, does not wait for them.
			if more := req.Announce - 1; more > 0 {
				res.Announced += more
				go func() {
					time.Sleep(announceGap)
					announce(context.Background(), req.Interface, prefix.Addr(), more)
				}()
			}
		}
	default:
		return Result{}, fmt.Errorf("net.addr: unknown op %q (want add, del or show)", req.Op)
	}
	return res, nil
}

func hasAddr(link netlink.Link, ip netip.Addr) (bool, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := nl.Dump(func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// announce broadcasts count gratuitous ARP requests (sender and target are
// both ip) from ifname, so that neighbours update their caches.
func announce(ctx context.Context, ifname string, ip netip.Addr, count int) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return 0, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return 0, fmt.Errorf("%s has no Ethernet address", ifname)
	}
	sender := garpSender
	if ip.Is6() {
		sender = advertSender
	}
	send, closeFn, err := sender(ifi, ip)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	sent := 0
	for i := 0; i < count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return sent, ctx.Err()
			case <-time.After(announceGap):
			}
		}
		if err := send(); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

// garpSender sends gratuitous ARPs for ip out of ifi.
func garpSender(ifi *net.Interface, ip netip.Addr) (send func() error, closeFn func(), err error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return nil, nil, fmt.Errorf("packet socket: %w", err)
	}
	bcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6, Addr: bcast}
	frame := garpFrame(ifi.HardwareAddr, ip)
	// Closing a packet socket waits for an RCU grace period (8–25 ms
	// here), which the move must not wait for.
	return func() error { return unix.Sendto(fd, frame, 0, to) }, func() { go unix.Close(fd) }, nil
}

// garpFrame is an Ethernet broadcast frame holding an ARP request for ip
// from ip.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 0, 42)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, mac...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_ARP)
	b = binary.BigEndian.AppendUint16(b, 1)             // hardware: Ethernet
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP) // protocol: IPv4
	b = append(b, 6, 4)                                 // address lengths
	b = binary.BigEndian.AppendUint16(b, 1)             // request
	ip4 := ip.As4()
	b = append(b, mac...)
	b = append(b, ip4[:]...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	b = append(b, ip4[:]...)
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
