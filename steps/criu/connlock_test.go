package criu

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

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
