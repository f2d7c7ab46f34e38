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
}

// tcpSockets lists the IPv4 and IPv6 TCP sockets whose state is in states
// (a mask of 1<<state) in the network namespace of pid (0: this thread's).
// The kernel filters by state, so a busy server's thousands of TIME_WAIT
// sockets cost nothing, unlike a read of /proc/net/tcp6, which formats
// them all: this is read while the workload is frozen.
func tcpSockets(pid int, states uint32) ([]tcpSocket, error) {
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
	defer sk.Close()
	var out []tcpSocket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// A dump can come back short when sockets come and go: ask again.
		var got []tcpSocket
		for range 3 {
			if got, err = diagTCP(sk, family, states); !errors.Is(err, nl.ErrDumpInterrupted) {
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

func diagTCP(sk *nl.NetlinkSocket, family uint8, states uint32) ([]tcpSocket, error) {
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_INET_DIAG: {Socket: sk}}
	req.AddData(diagRequest{family: family, states: states})
	var out []tcpSocket
	err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(m []byte) bool {
		if s, ok := parseDiag(m); ok {
			out = append(out, s)
		}
		return true
	})
	return out, err
}

// diagRequest is struct inet_diag_req_v2 for TCP, matching every socket
// in the states given.
type diagRequest struct {
	family uint8
	states uint32
}

func (r diagRequest) Len() int { return 56 }

func (r diagRequest) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = r.family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], r.states)
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
		State:  m[1],
		Local:  netip.AddrPortFrom(addr(m[8:24]), binary.BigEndian.Uint16(m[4:6])),
		Remote: netip.AddrPortFrom(addr(m[24:40]), binary.BigEndian.Uint16(m[6:8])),
		RQueue: binary.NativeEndian.Uint32(m[56:60]),
		Inode:  fmt.Sprint(binary.NativeEndian.Uint32(m[68:72])),
	}, true
}
