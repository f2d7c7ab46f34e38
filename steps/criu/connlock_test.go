package criu

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mig-project/mig/engine/host"
)

func TestUnlocked(t *testing.T) {
	c := func(l, r string) Conn {
		return Conn{Local: netip.MustParseAddrPort(l), Remote: netip.MustParseAddrPort(r)}
	}
	a, b, v6 := c("10.0.0.1:80", "10.0.0.9:5000"), c("10.0.0.1:80", "10.0.0.9:5001"), c("[fd00::1]:80", "[fd00::9]:5000")
	if got := unlocked([]Conn{a, b, v6}, []Conn{v6, a}); !slices.Equal(got, []Conn{b}) {
		t.Errorf("unlocked = %v, want [%v]", got, b)
	}
	if got := unlocked([]Conn{a}, []Conn{a, b}); len(got) != 0 {
		t.Errorf("unlocked = %v, want none", got)
	}
}

// BenchmarkDumpConnections dumps (and resumes) a server with many
// kept-alive clients, under mig's lock and under CRIU's, and reports how
// long CRIU kept it frozen and how long mig took to lock the connections
// before (the sum is what those clients wait for in the dump).
func BenchmarkDumpConnections(b *testing.B) {
	if testing.Short() {
		b.Skip("real CRIU benchmark")
	}
	if _, err := Find(context.Background(), ""); err != nil {
		b.Skip(err)
	}
	for _, n := range []int{10, 100, 500} {
		for _, own := range []bool{false, true} {
			name := fmt.Sprintf("conns=%d/lock=criu", n)
			if own {
				name = fmt.Sprintf("conns=%d/lock=mig", n)
			}
			b.Run(name, func(b *testing.B) {
				ownLock = own
				defer func() { ownLock = true }()
				benchDump(b, testPortBase+9, n)
			})
		}
	}
}

func benchDump(b *testing.B, port, conns int) {
	ctx := context.Background()
	h := testHost(b)
	c := startCounter(b, port, 8, true)
	for range conns {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
	}
	w := Workload{Kind: "process", Name: "web", Config: []byte(fmt.Sprintf(`{"pid": %d, "tcp_established": true}`, c.cmd.Process.Pid))}
	var r Resolved
	if err := ActResolve.Call(ctx, h, Request{Workload: w}, &r, host.CallOpts{}); err != nil {
		b.Fatal(err)
	}
	var frozen, locking float64
	for b.Loop() {
		var res DumpResult
		dir := b.TempDir() + "/images"
		err := ActDump.Call(ctx, h, DumpAction{Request: Request{Workload: w}, DumpRequest: DumpRequest{Dir: dir, Resolved: &r}}, &res, host.CallOpts{})
		if err != nil {
			b.Fatal(err)
		}
		frozen += res.Stats["frozen_time"]
		locking += res.Stats["lock_time"]
		if err := ActResume.Call(ctx, h, HeldAction{Request: Request{Workload: w}, Held: res.Held}, nil, host.CallOpts{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(frozen*1000/float64(b.N), "frozen-ms/op")
	b.ReportMetric(locking*1000/float64(b.N), "lock-ms/op")
}

// The lock keeps the locked connections' packets from their sockets both
// ways, IPv4 and IPv6, and no other connection's; once it goes, the
// peers' retransmissions get through.
func TestLockConnections(t *testing.T) {
	n := newTestNetns(t)
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	c4, s4 := connectedPairOn(t, n, ap("127.0.0.1:18301"))
	c6, s6 := connectedPairOn(t, n, ap("[::1]:18302"))
	other, otherSrv := connectedPairOn(t, n, ap("127.0.0.1:18303"))
	conn := func(s net.Conn) Conn {
		return Conn{Local: ap(s.LocalAddr().String()), Remote: ap(s.RemoteAddr().String())}
	}
	const table = "inet mig-lock-test"
	var err error
	n.do(func() { err = lockConns(nil, table, []Conn{conn(s4), conn(s6)}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.do(func() { DeleteNftTable(nil, table) }) })

	recv := func(c net.Conn, wait time.Duration) (string, error) {
		c.SetReadDeadline(time.Now().Add(wait))
		b := make([]byte, 16)
		k, err := c.Read(b)
		return string(b[:k]), err
	}
	for _, p := range [][2]net.Conn{{c4, s4}, {s4, c4}, {c6, s6}, {s6, c6}} {
		if _, err := p[0].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Write([]byte("o")); err != nil {
		t.Fatal(err)
	}
	if got, err := recv(otherSrv, 2*time.Second); got != "o" {
		t.Errorf("a connection the lock does not hold: got %q, %v", got, err)
	}
	for _, c := range []net.Conn{s4, c4, s6, c6} {
		if got, err := recv(c, 300*time.Millisecond); got != "" || err == nil {
			t.Errorf("%s got %q through the lock", c.LocalAddr(), got)
		}
	}
	n.do(func() { err = DeleteNftTable(nil, table) })
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{s4, c4, s6, c6} {
		if got, err := recv(c, 5*time.Second); got != "x" {
			t.Errorf("%s after the lock: got %q, %v", c.LocalAddr(), got, err)
		}
	}
}

// On a source, the hold guard holds the locked connections' segments (and
// only the SYNs to its ports): they reach the socket once it is released,
// at once, not on the client's retransmission timer.
func TestGuardHoldsLockedConns(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 97
	how := queueOrSkip(t, n)
	c, s := connectedPair(t, n, port)
	other, otherSrv := connectedPairOn(t, n, netip.MustParseAddrPort("127.0.0.1:18304"))
	spec := GuardSpec{Table: "inet mig-hold-test", Ports: []int{port}, NewConnections: NewHold, Queue: how,
		HoldConns: true, Deadline: time.Minute}
	startTestGuard(t, n, spec)
	var err error
	n.do(func() {
		pid, running, ok := runningGuard(spec.Table)
		if !ok {
			err = fmt.Errorf("guard %s not found", spec.Table)
			return
		}
		local, remote := s.LocalAddr().(*net.TCPAddr).AddrPort(), s.RemoteAddr().(*net.TCPAddr).AddrPort()
		err = running.addConns(nil, pid, []Conn{{Local: local, Remote: remote}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A connection it does not hold goes on.
	if _, err := other.Write([]byte("o")); err != nil {
		t.Fatal(err)
	}
	otherSrv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := otherSrv.Read(make([]byte, 1)); err != nil {
		t.Errorf("a connection the guard does not hold: %v", err)
	}
	// Nor does the held side send on it: its retransmissions would give
	// the peer a newer timestamp than the restored copy's.
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the held connection's socket sent a segment")
	}
	c.SetReadDeadline(time.Time{})
	heldUntilRelease(t, n, spec.Table, c, s, 500*time.Millisecond)
}
