package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TCP states as the kernel numbers them, for tcpSockets' mask.
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpListen      = 10
)

// tcpSocket is a TCP socket as sock_diag reports it.
type tcpSocket struct {
	State         uint8
	Local, Remote netip.AddrPort // IPv4-mapped addresses unmapped
	Inode         string         // as /proc/<pid>/fd shows it
	RQueue        uint32         // a listener's accept backlog
	family        uint8
	ifindex       uint32 // the device it is bound to, if any
}

// tcpSockets lists the IPv4 and IPv6 TCP sockets whose state is in states
// (a mask of 1<<state) in the network namespace of pid (0: this thread's).
// The kernel filters by state, so a busy server's thousands of TIME_WAIT
// sockets cost nothing to format, unlike a read of /proc/net/tcp6. A
// state other than LISTEN still walks the whole established table, of
// every namespace: milliseconds on a large host.
func tcpSockets(pid int, states uint32) ([]tcpSocket, error) {
	d, err := openDiag(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.list(states)
}

// udpSockets lists the IPv4 and IPv6 UDP sockets in the network namespace
// of pid (0: this thread's). An unconnected one is in state CLOSE, with a
// zero remote address.
func udpSockets(pid int) ([]tcpSocket, error) {
	d, err := openDiag(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.udp()
}

// udp is udpSockets in d's network namespace. RQueue is the bytes
// waiting in a socket's receive queue.
func (d *diagSocket) udp() ([]tcpSocket, error) {
	var out []tcpSocket
	var err error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var got []tcpSocket
		for range 3 {
			if got, err = d.dumpProto(family, unix.IPPROTO_UDP, ^uint32(0)); !errors.Is(err, nl.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		out = append(out, got...)
	}
	return out, nil
}

// diagSocket is a sock_diag socket in one network namespace.
type diagSocket struct{ sk *nl.NetlinkSocket }

// openDiag opens a sock_diag socket in the network namespace of pid (0:
// this thread's).
func openDiag(pid int) (*diagSocket, error) {
	cur, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer cur.Close()
	target := cur
	if pid > 0 {
		if target, err = netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
			return nil, err
		}
		defer target.Close()
	}
	sk, err := nl.GetNetlinkSocketAt(target, cur, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return &diagSocket{sk}, nil
}

func (d *diagSocket) Close() { d.sk.Close() }

// list is tcpSockets in d's network namespace.
func (d *diagSocket) list(states uint32) ([]tcpSocket, error) {
	return d.listOf(states, unix.AF_INET, unix.AF_INET6)
}

// listOf is list for the address families given only.
func (d *diagSocket) listOf(states uint32, families ...uint8) ([]tcpSocket, error) {
	var out []tcpSocket
	for _, family := range families {
		// A dump can come back short when sockets come and go: ask again.
		var got []tcpSocket
		var err error
		for range 3 {
			if got, err = d.dump(family, states); !errors.Is(err, nl.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		out = append(out, got...)
	}
	return out, nil
}

func (d *diagSocket) dump(family uint8, states uint32) ([]tcpSocket, error) {
	return d.dumpProto(family, unix.IPPROTO_TCP, states)
}

func (d *diagSocket) dumpProto(family, proto uint8, states uint32) ([]tcpSocket, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: d.sk}}
	req.AddData(diagRequest{family: family, proto: proto, states: states})
	var out []tcpSocket
	err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(m []byte) bool {
		if s, ok := parseDiag(m); ok {
			out = append(out, s)
		}
		return true
	})
	return out, err
}

// find looks s up by its addresses, as the kernel finds the socket for a
// packet: a hash lookup, not a walk. It returns false when nothing has
// those addresses any more. A connection gone may give its listener.
func (d *diagSocket) find(s tcpSocket) (tcpSocket, bool, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, 0)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: d.sk}}
	req.AddData(diagRequest{family: s.family, states: ^uint32(0), id: &s})
	msgs, err := req.Execute(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY)
	if errors.Is(err, unix.ENOENT) {
		return tcpSocket{}, false, nil
	}
	if err != nil {
		return tcpSocket{}, false, fmt.Errorf("sock_diag: %w", err)
	}
	for _, m := range msgs {
		if got, ok := parseDiag(m); ok {
			return got, true, nil
		}
	}
	return tcpSocket{}, false, nil
}

// diagRequest is struct inet_diag_req_v2 for TCP (or proto), matching
// every socket in the states given, or, with id, the one socket with id's
// addresses.
type diagRequest struct {
	family uint8
	proto  uint8 // 0: TCP
	states uint32
	id     *tcpSocket
}

func (r diagRequest) Len() int { return 56 }

func (r diagRequest) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = r.family, r.proto
	if r.proto == 0 {
		b[1] = unix.IPPROTO_TCP
	}
	binary.NativeEndian.PutUint32(b[4:], r.states)
	if s := r.id; s != nil {
		addr := func(dst []byte, a netip.Addr) {
			if r.family == unix.AF_INET {
				a4 := a.Unmap().As4()
				copy(dst, a4[:])
				return
			}
			a16 := a.As16() // an IPv4 address mapped again
			copy(dst, a16[:])
		}
		binary.BigEndian.PutUint16(b[8:], s.Local.Port())
		binary.BigEndian.PutUint16(b[10:], s.Remote.Port())
		addr(b[12:28], s.Local.Addr())
		addr(b[28:44], s.Remote.Addr())
		binary.NativeEndian.PutUint32(b[44:], s.ifindex)
		// INET_DIAG_NOCOOKIE: any socket with these addresses.
		binary.NativeEndian.PutUint32(b[48:], ^uint32(0))
		binary.NativeEndian.PutUint32(b[52:], ^uint32(0))
	}
	return b
}

// parseDiag reads a struct inet_diag_msg: family, state, then the socket
// id (ports big-endian, 16-byte addresses), then queues, uid and inode.
func parseDiag(m []byte) (tcpSocket, bool) {
	if len(m) < 72 {
		return tcpSocket{}, false
	}
	addr := func(b []byte) netip.Addr {
		if m[0] == unix.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16([16]byte(b[:16])).Unmap()
	}
	return tcpSocket{
		State:   m[1],
		Local:   netip.AddrPortFrom(addr(m[8:24]), binary.BigEndian.Uint16(m[4:6])),
		Remote:  netip.AddrPortFrom(addr(m[24:40]), binary.BigEndian.Uint16(m[6:8])),
		RQueue:  binary.NativeEndian.Uint32(m[56:60]),
		Inode:   fmt.Sprint(binary.NativeEndian.Uint32(m[68:72])),
		family:  m[0],
		ifindex: binary.NativeEndian.Uint32(m[40:44]),
	}, true
}
