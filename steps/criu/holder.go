package criu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mig-project/mig/engine/nl"
)

// RunGuard is the guard process (`mig agent guard`, started by StartGuard):
// it reads its GuardSpec from stdin, puts the table in place, says "ready"
// on stdout, and holds the queued packets (SYNs, and with HoldEstablished
// the other segments too) until it is released (SIGUSR1 or SIGTERM) or its
// deadline passes. A held packet whose address has left this host is
// re-sent at once, so that it follows the address; on release the others
// go to the local sockets. It removes its table before it exits.
func RunGuard(stdin io.Reader, stdout *os.File, stderr io.Writer) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s guard: "+format+"\n", append([]any{time.Now().UTC().Format(time.RFC3339Nano)}, args...)...)
	}
	var spec GuardSpec
	if err := json.NewDecoder(stdin).Decode(&spec); err != nil {
		logf("read spec: %v", err)
		return 2
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)
	ctx := context.Background()

	var q *nfQueue
	var num uint16
	if spec.NewConnections == NewHold {
		var err error
		if q, err = openQueue(guardQueue(os.Getpid())); err != nil {
			logf("%v", err)
			return 1
		}
		defer q.Close()
		num = q.num
	}
	if err := spec.install(num); err != nil {
		logf("%v", err)
		return 1
	}
	defer func() {
		if err := DeleteNftTable(nil, spec.Table); err != nil {
			logf("%v", err)
		}
	}()
	fmt.Fprintln(stdout, "ready")
	stdout.Close()
	logf("up: table %s, ports %v, new connections %s (queue %d), deadline %s", spec.Table, spec.Ports, spec.NewConnections, num, spec.Deadline)

	packets := make(chan []queued, 64)
	if q != nil {
		go func() {
			buf := make([]byte, 1<<17)
			for {
				ps, err := q.read(buf)
				var ack *ackError
				if errors.As(err, &ack) {
					logf("%v", err)
					err = nil
				}
				if err != nil {
					logf("read queue: %v", err)
					close(packets)
					return
				}
				if len(ps) > 0 {
					packets <- ps
				}
			}
		}()
	}
	addrs := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribe(addrs, done); err != nil {
		logf("watch addresses: %v", err)
	}
	h := &holder{q: q, logf: logf, passes: !spec.dropsInput()}
	h.localAddrs()
	deadline := time.NewTimer(spec.Deadline)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ps, ok := <-packets:
			if !ok {
				packets = nil
				continue
			}
			// Only new packets can need re-sending, unless an address
			// left, which the other cases see.
			from := len(h.held)
			h.take(ps)
			if h.away(h.held[from:]) {
				h.follow()
			}
		case <-addrs:
			h.follow()
		case <-tick.C:
			h.follow()
			if spec.WatchPID > 0 && h.watch(spec.WatchPID) {
				logf("pid %d is gone: released", spec.WatchPID)
				h.release(ctx, spec.Table, packets)
				return 0
			}
		case s := <-sigs:
			logf("released (%s)", s)
			h.release(ctx, spec.Table, packets)
			return 0
		case <-deadline.C:
			logf("deadline %s passed: released", spec.Deadline)
			h.release(ctx, spec.Table, packets)
			return 0
		}
	}
}

// flushTable removes every rule of table, "inet NAME", keeping its chains.
func flushTable(table string) error {
	_, name, _ := strings.Cut(table, " ")
	c, err := nftables.New()
	if err != nil {
		return err
	}
	c.FlushTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("flush table %s: %w", table, err)
	}
	return nil
}

// GuardMain makes this process a guard, and exits, when StartGuard started
// it as one; otherwise it returns. Programs that may be started as a guard
// (mig, the test binaries that serve agent actions) call it first thing.
func GuardMain() {
	n := len(os.Args)
	if os.Getenv("MIG_GUARD") == "1" && n >= 3 && os.Args[n-2] == "agent" && os.Args[n-1] == "guard" {
		os.Exit(RunGuard(os.Stdin, os.Stdout, os.Stderr))
	}
}

// holder keeps the queued packets a guard holds.
type holder struct {
	q    *nfQueue
	held []queued
	logf func(string, ...any)
	// passes says whether a packet let through meets no drop rule of the
	// guard's table (see GuardSpec.dropsInput).
	passes bool
	raw4   int // raw sockets for re-sending, opened on first use
	raw6   int
	// forgotten are the moved addresses whose neighbour entries went.
	forgotten map[netip.Addr]bool
	// seen are the addresses this host had while the guard ran; here
	// are those it had at the last look.
	seen, here map[netip.Addr]bool
}

// watch says whether the watched workload is gone. (Whether it runs
// again cannot be told from its state: CRIU's parasite runs in the frozen
// tasks while they are dumped.)
func (h *holder) watch(pid int) bool {
	st, err := readStat(pid)
	return err != nil || st.state == 'Z' || st.state == 'X'
}

// take holds the packets to this host's addresses and to those that left it
// while the guard ran; the others only passed through (the guard queues
// before routing) and go on at once.
func (h *holder) take(ps []queued) {
	var local map[netip.Addr]bool
	for _, p := range ps {
		dst, ok := packetDst(p.payload)
		if ok && !h.seen[dst] {
			if local == nil {
				local = h.localAddrs()
			}
			if !local[dst] {
				h.q.verdict(p.id, nfAccept)
				continue
			}
		}
		h.held = append(h.held, p)
	}
}

// localAddrs returns this host's addresses now, and remembers them as
// addresses the guard has seen here.
func (h *holder) localAddrs() map[netip.Addr]bool {
	local := localAddrs()
	if h.seen == nil {
		h.seen = map[netip.Addr]bool{}
	}
	for a := range local {
		h.seen[a] = true
	}
	h.here = local
	return local
}

// away says whether one of ps goes to an address this host no longer had
// at the last look: a cheap test, without asking the kernel, for each
// packet that comes while the guard holds thousands.
func (h *holder) away(ps []queued) bool {
	for _, p := range ps {
		if dst, ok := packetDst(p.payload); ok && !h.here[dst] {
			return true
		}
	}
	return false
}

// follow re-sends the held packets whose destination is no longer an address
// of this host (it moved): routed from here, they reach its new host.
// Until the new host answers for the address (forget made this host ask
// again), the kernel queues what is sent there in the neighbour entry, up
// to unres_qlen_bytes (about 200 small packets), and drops the rest without
// a word: their clients would wait for their retransmission timers, then
// back off. So while the next hop is unresolved, only a burst goes, and
// the rest waits for the answer (at most neighbourWait).
func (h *holder) follow() {
	deadline := time.Now().Add(neighbourWait)
	for {
		waiting := h.followOnce(time.Now().After(deadline))
		if len(waiting) == 0 {
			return
		}
		for time.Now().Before(deadline) && !allResolved(waiting) {
			time.Sleep(time.Millisecond)
		}
	}
}

// neighbourWait bounds how long follow waits for a moved address's next
// hop; unresolvedBurst is what it sends there before.
const (
	neighbourWait   = 200 * time.Millisecond
	unresolvedBurst = 32
)

// followOnce re-sends what it can (everything, with force) and returns the
// destinations whose packets wait for their next hop.
func (h *holder) followOnce(force bool) map[netip.Addr]bool {
	if len(h.held) == 0 {
		return nil
	}
	local := h.localAddrs()
	kept := h.held[:0]
	sent, failed := map[netip.Addr]int{}, map[netip.Addr]error{}
	ready := map[netip.Addr]bool{}
	waiting := map[netip.Addr]bool{}
	defer func() {
		for dst, n := range sent {
			h.logf("re-sent %d packets to %s, which left this host", n, dst)
		}
		for dst, err := range failed {
			h.logf("re-send packets to %s: %v", dst, err)
		}
	}()
	for _, p := range h.held {
		dst, ok := packetDst(p.payload)
		if !ok || local[dst] {
			kept = append(kept, p)
			continue
		}
		h.forget(dst)
		r, known := ready[dst]
		if !known {
			r = force || resolved(dst)
			ready[dst] = r
		}
		if !r && sent[dst] >= unresolvedBurst {
			waiting[dst] = true
			kept = append(kept, p)
			continue
		}
		if err := h.resend(p, dst); err != nil {
			failed[dst] = err
		} else {
			sent[dst]++
		}
	}
	h.held = kept
	return waiting
}

// resolved says whether this host knows the link-layer address of the
// next hop to dst (or cannot tell).
func resolved(dst netip.Addr) bool {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return true
	}
	hop := dst
	if gw, ok := netip.AddrFromSlice(routes[0].Gw); ok {
		hop = gw.Unmap()
	}
	neighs, err := nl.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(routes[0].LinkIndex, nlFamily(dst)) })
	if err != nil {
		return true
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == hop {
			return n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
		}
	}
	return false
}

// allResolved says whether the next hops to every one of dsts are known.
func allResolved(dsts map[netip.Addr]bool) bool {
	for dst := range dsts {
		if !resolved(dst) {
			return false
		}
	}
	return true
}

// forget removes what this host's neighbour table knows about addr, once
// per departure: an entry left from an earlier move may point at a host
// that does not have the address yet, which would drop the re-sent SYNs.
// Without an entry, they wait for ARP, which the address's new host
// answers (or announces) as soon as it has it.
func (h *holder) forget(addr netip.Addr) {
	if h.forgotten[addr] {
		return
	}
	if h.forgotten == nil {
		h.forgotten = map[netip.Addr]bool{}
	}
	h.forgotten[addr] = true
	neighs, err := nl.Dump(func() ([]netlink.Neigh, error) { return netlink.NeighList(0, nlFamily(addr)) })
	if err != nil {
		h.logf("neighbours: %v", err)
		return
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == addr {
			if err := netlink.NeighDel(&n); err != nil {
				h.logf("forget neighbour %s: %v", addr, err)
			}
		}
	}
}

// release lets the held packets through (or re-sends those whose address
// moved), empties the table's chains so that new packets reach the
// sockets, and removes the table. Where the table has drop rules on input,
// a packet let through before the chains are empty would meet them: then
// the held ones wait for the chains to empty. Emptying them waits for the
// kernel (5–20 ms here), so elsewhere they go first, and what the queue
// still brings goes through as it comes. The kernel drops what is still
// queued when a table goes, so the table goes last.
func (h *holder) release(ctx context.Context, table string, packets chan []queued) {
	defer func() {
		if err := DeleteNftTable(nil, table); err != nil {
			h.logf("%v", err)
		}
	}()
	if h.q == nil {
		if err := flushTable(table); err != nil {
			h.logf("%v", err)
		}
		return
	}
	h.localAddrs() // where the held packets go now: letThrough asks the kernel no more
	let, n := h.passes, 0
	if let {
		n = h.letThrough()
	}
	flushed := make(chan error, 1)
	go func() { flushed <- flushTable(table) }()
	// Packets queued before the chains emptied may still be on their way:
	// after a burst, hundreds of them. They are let through until none
	// has come for quietFor.
	var drain, stop <-chan time.Time
	for packets != nil || flushed != nil {
		select {
		case ps, ok := <-packets:
			if !ok {
				packets = nil
				continue
			}
			h.take(ps)
			if let {
				n += h.letThrough()
			}
			if drain != nil {
				drain = time.After(quietFor)
			}
		case err := <-flushed:
			if err != nil {
				h.logf("%v", err)
			}
			flushed, let = nil, true
			n += h.letThrough()
			drain = time.After(quietFor)
			stop = time.After(drainFor)
		case <-drain:
			packets = nil
		case <-stop:
			h.logf("packets still coming %s after the rules went", drainFor)
			packets = nil
		}
	}
	h.logf("let %d held packets through", n)
}

// After the rules go, release reads the queue until it has been quiet
// for quietFor, and for drainFor at most.
const (
	quietFor = 5 * time.Millisecond
	drainFor = time.Second
)

// letThrough accepts the held packets, after re-sending those whose address
// moved, and says how many it accepted.
func (h *holder) letThrough() int {
	if h.q == nil {
		return 0
	}
	if h.away(h.held) {
		h.follow()
	}
	n := len(h.held)
	if n == 0 {
		return 0
	}
	// Every packet queued before the last held one is held or has had
	// its verdict (the queue hands them out in order), so one batch
	// verdict accepts them all: a thousand SYNs at once, not one by one.
	last := h.held[0].id
	for _, p := range h.held {
		last = max(last, p.id)
	}
	if err := h.q.verdictBatch(last, nfAccept); err != nil {
		h.logf("accept packets up to %d: %v", last, err)
	}
	h.held = nil
	return n
}

// resend sends a copy of a held packet to dst out through the routing
// table, then drops the held one.
func (h *holder) resend(p queued, dst netip.Addr) error {
	defer h.q.verdict(p.id, nfDrop)
	// IPPROTO_RAW sends the packet as it is, header included, in
	// either family.
	var fd *int
	var af int
	var to unix.Sockaddr
	if dst.Is4() {
		fd, af, to = &h.raw4, unix.AF_INET, &unix.SockaddrInet4{Addr: dst.As4()}
	} else {
		fd, af, to = &h.raw6, unix.AF_INET6, &unix.SockaddrInet6{Addr: dst.As16()}
	}
	if *fd == 0 {
		s, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		*fd = s
	}
	return unix.Sendto(*fd, p.payload, 0, to)
}

// packetDst is the destination of an IPv4 or IPv6 packet.
func packetDst(pkt []byte) (netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[16:20])), true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return netip.Addr{}, false
}

// nlFamily is netlink's family of a.
func nlFamily(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// localAddrs returns this network namespace's addresses.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}
