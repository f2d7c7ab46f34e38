package criu

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// dumpedConnections is Connections read from the files image of the dump
// in dir: the connections CRIU took, exactly. The dump needs them while
// the workload is frozen, and reading the image costs microseconds, where
// asking the kernel again (sock_diag, as CRIU did) walks every bucket of
// the host's established-socket table: 3 ms with no socket at all on a
// machine of 24 GiB, and the table grows with memory.
func dumpedConnections(dir string, ports []int) ([]Conn, error) {
	socks, err := dumpedTCP(dir)
	if err != nil {
		return nil, err
	}
	var out []Conn
	for _, sk := range socks {
		if sk.state == tcpEstablished && guardedConn(sk.local, ports) {
			out = append(out, Conn{Local: sk.local, Remote: sk.remote})
		}
	}
	return out, nil
}

// dumpedTCP are the TCP sockets in the files image of the dump in dir.
func dumpedTCP(dir string) ([]*dumpedSocket, error) {
	path := filepath.Join(dir, "files.img")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	entries, err := imageEntries(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []*dumpedSocket
	for _, e := range entries {
		sk, err := inetSocket(e)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if sk != nil && sk.proto == unix.IPPROTO_TCP {
			out = append(out, sk)
		}
	}
	return out, nil
}

// dumpedPeers are the connected TCP sockets of the dump in dir: every
// one with a peer, whatever its state.
func dumpedPeers(dir string) ([]Conn, error) {
	socks, err := dumpedTCP(dir)
	if err != nil {
		return nil, err
	}
	var out []Conn
	for _, sk := range socks {
		if sk.remote.Port() != 0 {
			out = append(out, Conn{Local: sk.local, Remote: sk.remote})
		}
	}
	return out, nil
}

// dumpedSocket is what mig reads of CRIU's InetSkEntry.
type dumpedSocket struct {
	proto, state  uint64
	local, remote netip.AddrPort
}

// FileEntry and InetSkEntry field numbers (CRIU's fdinfo.proto and
// sk-inet.proto), and FileEntry's type for an inet socket.
const (
	fileType, fileInet   = 1, 4
	fdInetSocket         = 4
	skProto, skState     = 5, 6
	skSrcPort, skDstPort = 7, 8
	skSrcAddr, skDstAddr = 11, 12
)

// inetSocket decodes a FileEntry of files.img: nil unless it is an inet
// socket.
func inetSocket(entry []byte) (*dumpedSocket, error) {
	var isk []byte
	inet := false
	for b := entry; len(b) > 0; {
		f, err := nextField(b)
		if err != nil {
			return nil, err
		}
		switch {
		case f.num == fileType && f.wire == 0:
			inet = f.value == fdInetSocket
		case f.num == fileInet && f.wire == 2:
			isk = f.data
		}
		b = b[f.size:]
	}
	if !inet || isk == nil {
		return nil, nil
	}
	var sk dumpedSocket
	var src, dst []byte
	var srcPort, dstPort uint16
	for b := isk; len(b) > 0; {
		f, err := nextField(b)
		if err != nil {
			return nil, err
		}
		switch f.num {
		case skProto:
			sk.proto = f.value
		case skState:
			sk.state = f.value
		case skSrcPort:
			srcPort = uint16(f.value)
		case skDstPort:
			dstPort = uint16(f.value)
		case skSrcAddr:
			src = addrWords(src, f)
		case skDstAddr:
			dst = addrWords(dst, f)
		}
		b = b[f.size:]
	}
	sk.local = addrPort(src, srcPort)
	sk.remote = addrPort(dst, dstPort)
	return &sk, nil
}

// addrWords appends an address's 32-bit words to b, in the kernel's byte
// order as CRIU keeps them, whether the field came one word at a time or
// packed.
func addrWords(b []byte, f protoField) []byte {
	if f.wire == 0 {
		return binary.NativeEndian.AppendUint32(b, uint32(f.value))
	}
	for p := f.data; len(p) > 0; {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			break
		}
		b = binary.NativeEndian.AppendUint32(b, uint32(v))
		p = p[n:]
	}
	return b
}

// addrPort makes an address of 4 or 16 bytes, IPv4-mapped ones unmapped.
func addrPort(b []byte, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// HeldConnections are the connections of a held tree of processes, pids,
// dumped into dir: dumpedConnections, or Connections where the image
// cannot be read.
func HeldConnections(dir string, pids, ports []int) []Conn {
	if conns, err := dumpedConnections(dir, ports); err == nil {
		return conns
	}
	return Connections(pids, ports)
}
