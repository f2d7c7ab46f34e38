package criu

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// A dump must keep every packet away from the connections it takes, from
// before CRIU reads them until their tasks are resumed or killed, or the
// kernel acknowledges data the images do not have, and resets the peers
// once the tasks are gone. CRIU's nftables lock drops them, with one nft
// run per connection and direction, each with a fresh libnftables
// context, all after the freeze: 5 ms to set up and 0.55 ms per
// connection here, half a second for a server with 1000 kept-alive
// clients. mig locks them itself instead, in one transaction, and runs
// CRIU with --network-lock skip:
//
//   - Where the hold guard of the workload's ports queues (new_connections
//     "hold"), it holds the packets of the connections too: one rule per
//     address family added to its table. A held segment follows the
//     service address to the target when it moves (the target's guard
//     holds it until the restored socket is there), or reaches the resumed
//     workload on undo, so a kept-alive client's request sent during the
//     pause is answered when the copy runs, not when its client sends it
//     again.
//   - Without a queueing guard, they are dropped both ways in a table of
//     their own, as CRIU would.
//
// A connection the workload opens or accepts after the lock is not
// covered: the dump then gives the tasks back and runs again under CRIU's
// own lock (see Process.dumpLocked).

// connLockTable names mig's lock of the connections of the tree at pid.
func connLockTable(pid int) string { return fmt.Sprintf("inet mig-lock-%d", pid) }

// lockConnections locks the TCP connections pids have open, in the network
// namespace of pids[0]: held by the running guard of holdTable where it
// can, dropped in the table it returns ("" if none) otherwise. It returns
// the connections it locked.
func lockConnections(pids []int, holdTable string) (string, []Conn, error) {
	conns, err := openConns(pids)
	if err != nil || len(conns) == 0 {
		return "", nil, err
	}
	netns := nsOf(pids[0], "net")
	if netns != nil {
		defer netns.Close()
	}
	if pid, spec, ok := runningGuard(holdTable); ok && spec.HoldConns && spec.holdsConns() {
		if err := spec.addConns(netns, pid, conns); err != nil {
			return "", nil, fmt.Errorf("hold the connections: %w", err)
		}
		return "", conns, nil
	}
	table := connLockTable(pids[0])
	if err := lockConns(netns, table, conns); err != nil {
		return "", nil, err
	}
	return table, conns, nil
}

// lockConns puts up table in the network namespace netns (nil: this one),
// dropping the packets of conns both ways.
func lockConns(netns *os.File, table string, conns []Conn) error {
	c, err := nftConn(netns)
	if err != nil {
		return fmt.Errorf("lock connections: nftables: %w", err)
	}
	// Added, not replaced: a delete in the batch, even of no table, would
	// wait for an RCU grace period (10–20 ms here). A table a dead run
	// left under this PID holds no connection of this one.
	t, err := nftTable(table)
	if err != nil {
		return err
	}
	c.AddTable(t)
	var v4, v6 []fourTuple
	for _, cn := range conns {
		l, r := cn.Local.Addr(), cn.Remote.Addr()
		both := []fourTuple{
			{saddr: l, sport: cn.Local.Port(), daddr: r, dport: cn.Remote.Port()},
			{saddr: r, sport: cn.Remote.Port(), daddr: l, dport: cn.Local.Port()},
		}
		if l.Is4() {
			v4 = append(v4, both...)
		} else {
			v6 = append(v6, both...)
		}
	}
	for _, hook := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"input", nftables.ChainHookInput}, {"output", nftables.ChainHookOutput}} {
		ch := nftBaseChain(c, t, hook.name, hook.hook, 0)
		for _, ts := range [][]fourTuple{v4, v6} {
			if len(ts) == 0 {
				continue
			}
			m, err := tcpTuples(c, t, ts)
			if err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(m, nftDrop)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("lock connections: %w", err)
	}
	return nil
}

// openConns is openConnections; tests replace it to miss connections.
var openConns = openConnections

// openConnections are the TCP connections pids have open, read from
// their sockets (IPv4-mapped addresses unmapped): microseconds each,
// where sock_diag walks the whole established-socket table.
func openConnections(pids []int) ([]Conn, error) {
	seen := map[Conn]bool{}
	var out []Conn
	for _, pid := range pids {
		err := eachTCPSocket(pid, func(fd int) error {
			peer, err := unix.Getpeername(fd)
			if err != nil {
				return nil // not connected
			}
			self, err := unix.Getsockname(fd)
			if err != nil {
				return nil
			}
			cn := Conn{Local: sockAddrPort(self), Remote: sockAddrPort(peer)}
			if cn.Local.IsValid() && cn.Remote.IsValid() && !seen[cn] {
				seen[cn] = true
				out = append(out, cn)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("connections of pid %d: %w", pid, err)
		}
	}
	return out, nil
}

// sockAddrPort is an inet socket address, IPv4-mapped ones unmapped.
func sockAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// unlocked returns the connections of dumped that locked does not cover.
func unlocked(dumped, locked []Conn) []Conn {
	have := map[Conn]bool{}
	for _, cn := range locked {
		have[cn] = true
	}
	var out []Conn
	for _, cn := range dumped {
		if !have[cn] {
			out = append(out, cn)
		}
	}
	return out
}
