package criu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNetns is a new network namespace whose loopback is up; sockets and
// processes that do makes live there.
type testNetns struct{ h netns.NsHandle }

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	if testing.Short() || os.Getuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
	ch := make(chan error, 1)
	n := &testNetns{}
	go func() {
		// The thread goes back to its namespace before it is unlocked: it
		// may be the main thread, whose namespace /proc/self/net shows.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- err
			return
		}
		defer func() {
			netns.Set(orig)
			orig.Close()
			runtime.UnlockOSThread()
		}()
		h, err := netns.New()
		if err != nil {
			ch <- err
			return
		}
		n.h = h
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		ch <- err
	}()
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.h.Close() })
	return n
}

// do runs f on a thread in the namespace.
func (n *testNetns) do(f func()) {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			panic(err)
		}
		defer func() {
			netns.Set(orig)
			orig.Close()
			runtime.UnlockOSThread()
			close(done)
		}()
		if err := netns.Set(n.h); err != nil {
			panic(err)
		}
		f()
	}()
	<-done
}

func TestQueueSupport(t *testing.T) {
	n := newTestNetns(t)
	var how string
	var err error
	n.do(func() { how, err = QueueSupport() })
	if how == "" {
		t.Fatalf("no way to queue packets: %v", err)
	}
	t.Logf("queue: %s", how)
}

// queueOrSkip returns how n can queue packets, and skips the test where
// it cannot.
func queueOrSkip(t testing.TB, n *testNetns) string {
	t.Helper()
	var how string
	n.do(func() { how, _ = QueueSupport() })
	if how == "" {
		t.Skip("this host cannot queue packets")
	}
	return how
}

// startTestGuard starts a guard for spec in n, stopped when the test ends.
func startTestGuard(t *testing.T, n *testNetns, spec GuardSpec) {
	t.Helper()
	var err error
	n.do(func() { _, err = StartGuard(context.Background(), 0, spec) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.do(func() { StopGuard(context.Background(), 0, spec.Table) }) })
}

// TestGuardHolds: a SYN that comes while the guard holds waits, and gets
// through as soon as the guard is released after a listener came, with no
// SYN retransmit (which would take a second).
func TestGuardHolds(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 90
	how := queueOrSkip(t, n)
	spec := GuardSpec{Table: "inet mig-guard-test", Ports: []int{port}, NewConnections: NewHold, Queue: how, Established: true, Deadline: time.Minute}
	var err error
	startTestGuard(t, n, spec)
	type result struct {
		took time.Duration
		err  error
	}
	dialed := make(chan result, 1)
	start := time.Now()
	go n.do(func() {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
		if err == nil {
			c.Close()
		}
		dialed <- result{time.Since(start), err}
	})
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-dialed:
		t.Fatalf("the connection did not wait: %v after %s", r.err, r.took)
	default:
	}
	var ln net.Listener
	n.do(func() { ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	released := time.Now()
	n.do(func() { err = StopGuard(context.Background(), 0, spec.Table) })
	if err != nil {
		t.Fatal(err)
	}
	r := <-dialed
	if r.err != nil {
		t.Fatalf("connect: %v", r.err)
	}
	if late := time.Since(released); late > 500*time.Millisecond {
		t.Errorf("connected %s after the release: the SYN was retransmitted, not held", late)
	}
	t.Logf("connected after %s (held ~300 ms)", r.took)
	n.do(func() { err = dropNftTableIn(context.Background(), nil, spec.Table) })
	if nftTableExistsIn(n, spec.Table) {
		t.Errorf("table %s left behind", spec.Table)
	}
}

// TestGuardReleasesBurst: a target's guard holds the SYNs of a thousand
// clients, as a busy server's move does, and releases them at once. Each
// client's handshake and request, which follow the released SYN while the
// guard's rules are still going, must reach the server then, not a second
// later, when the server would send its SYN-ACK again.
func TestGuardReleasesBurst(t *testing.T) {
	n := newTestNetns(t)
	const port, clients = testPortBase + 89, 1000
	how := queueOrSkip(t, n)
	spec := GuardSpec{Table: "inet mig-guard-burst", Ports: []int{port}, NewConnections: NewHold, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Minute}
	var ln net.Listener
	var err error
	n.do(func() { ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			}()
		}
	}()
	startTestGuard(t, n, spec)

	fds := connectMany(t, n, port, clients)
	defer closeAll(fds)
	time.Sleep(200 * time.Millisecond)

	before := retransmits(t, n)
	released := time.Now()
	n.do(func() { SignalGuard(spec.Table) })
	// Each client sends its request once connected and waits for the echo.
	const (
		connecting = iota
		waiting
		done
	)
	state := make([]int, len(fds))
	var slowest time.Duration
	left := len(fds)
	for left > 0 && time.Since(released) < 5*time.Second {
		pfds := make([]unix.PollFd, 0, left)
		at := make([]int, 0, left)
		for i, fd := range fds {
			switch state[i] {
			case connecting:
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
			case waiting:
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			default:
				continue
			}
			at = append(at, i)
		}
		if _, err := unix.Poll(pfds, 100); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		for j, p := range pfds {
			i := at[j]
			switch {
			case p.Revents&(unix.POLLERR|unix.POLLHUP) != 0:
				soErr, _ := unix.GetsockoptInt(fds[i], unix.SOL_SOCKET, unix.SO_ERROR)
				t.Fatalf("client %d: %v", i, syscall.Errno(soErr))
			case state[i] == connecting && p.Revents&unix.POLLOUT != 0:
				if _, err := syscall.Write(fds[i], []byte("hello")); err != nil {
					t.Fatalf("client %d: write: %v", i, err)
				}
				state[i] = waiting
			case state[i] == waiting && p.Revents&unix.POLLIN != 0:
				state[i] = done
				left--
				slowest = max(slowest, time.Since(released))
			}
		}
	}
	if left > 0 {
		t.Fatalf("%d of %d clients got no answer within 5s of the release", left, len(fds))
	}
	resent := retransmits(t, n) - before
	t.Logf("%d clients answered, the last %s after the release; %d segments sent again", len(fds), slowest.Round(time.Millisecond), resent)
	if resent > clients/20 {
		t.Errorf("%d segments sent again: the handshakes and requests that followed the released SYNs were lost (the last client answered after %s)", resent, slowest)
	}
}

// connectMany starts count non-blocking connects to 127.0.0.1:port in n
// and returns their sockets, which the caller closes (closeAll).
func connectMany(tb testing.TB, n *testNetns, port, count int) []int {
	tb.Helper()
	fds := make([]int, 0, count)
	var err error
	n.do(func() {
		for range count {
			var fd int
			if fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0); err != nil {
				return
			}
			fds = append(fds, fd)
			if err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != syscall.EINPROGRESS {
				return
			}
			err = nil
		}
	})
	if err != nil {
		closeAll(fds)
		tb.Fatalf("connect: %v", err)
	}
	return fds
}

// closeAll closes the sockets of connectMany.
func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// retransmits reads the TCP segments n's stack has sent again so far.
func retransmits(t *testing.T, n *testNetns) int {
	t.Helper()
	var b []byte
	var err error
	n.do(func() { b, err = os.ReadFile("/proc/thread-self/net/snmp") })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "RetransSegs"); i > 0 && i < len(f) {
			v, _ := strconv.Atoi(f[i])
			return v
		}
	}
	t.Fatal("no RetransSegs in /proc/net/snmp")
	return 0
}

// TestGuardHoldsEstablished: with HoldEstablished, what a client sends
// over an established connection while the guard holds waits, and reaches
// the server as soon as the guard is released, not on the client's
// retransmission timer.
func TestGuardHoldsEstablished(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 93
	how := queueOrSkip(t, n)
	c, s := connectedPair(t, n, port)
	spec := GuardSpec{Table: "inet mig-guard-test", Ports: []int{port}, NewConnections: NewHold, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Minute}
	startTestGuard(t, n, spec)
	heldUntilRelease(t, n, spec.Table, c, s, time.Second)
}

// TestGuardAddsConns: guarding a connection found after the guard came up
// (an outgoing one, found by the dump) changes the running guard's table
// in place, without a restart, and holds that connection's segments too.
func TestGuardAddsConns(t *testing.T) {
	n := newTestNetns(t)
	const port, peerPort = testPortBase + 94, testPortBase + 95
	how := queueOrSkip(t, n)
	var ln, peer net.Listener
	var err error
	n.do(func() {
		if ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			peer, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", peerPort))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer peer.Close()
	// The workload's outgoing connection: out, to the peer's side.
	var out net.Conn
	n.do(func() { out, err = net.DialTimeout("tcp", peer.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := peer.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()

	spec := GuardSpec{Table: "inet mig-guard-test", Ports: []int{port}, NewConnections: NewHold, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Minute}
	var first, second int
	n.do(func() { first, err = StartGuard(context.Background(), 0, spec) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.do(func() { StopGuard(context.Background(), 0, spec.Table) }) })
	local, remote := out.LocalAddr().(*net.TCPAddr).AddrPort(), out.RemoteAddr().(*net.TCPAddr).AddrPort()
	spec.Conns = []Conn{{Local: local, Remote: remote}}
	n.do(func() { second, err = StartGuard(context.Background(), 0, spec) })
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("the guard was restarted (pid %d, then %d): want its table changed in place", first, second)
	}

	heldUntilRelease(t, n, spec.Table, in, out, 500*time.Millisecond)
}

// heldUntilRelease writes five bytes on from and checks that they reach
// to only once the guard of table in n is released, and at once then:
// held, not dropped and sent again.
func heldUntilRelease(t *testing.T, n *testNetns, table string, from, to net.Conn, wait time.Duration) {
	t.Helper()
	got := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(to, buf); err == nil && string(buf) == "hello" {
			got <- time.Now()
		}
		close(got)
	}()
	// Five bytes: the queue's message for the segment is not padded.
	if _, err := from.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(wait)
	select {
	case <-got:
		t.Fatal("the segment was not held")
	default:
	}
	released := time.Now()
	var err error
	n.do(func() { err = StopGuard(context.Background(), 0, table) })
	if err != nil {
		t.Fatal(err)
	}
	at, ok := <-got
	if !ok {
		t.Fatal("the segment never came")
	}
	// Dropped, the segment would come again on the client's timer, which
	// backs off from 200 ms: hundreds of milliseconds after the release.
	if late := at.Sub(released); late > 200*time.Millisecond {
		t.Errorf("the segment came %s after the release: it was retransmitted, not held", late)
	}
	t.Logf("the segment came %s after the release", at.Sub(released))
}

func nftTableExistsIn(n *testNetns, table string) bool {
	var ok bool
	n.do(func() { ok = nftTableExists(context.Background(), table) })
	return ok
}

// TestGuardResets: in "reset" mode a connection fails at once, as before.
func TestGuardResets(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 91
	spec := GuardSpec{Table: "inet mig-guard-test", Ports: []int{port}, NewConnections: NewReset, Deadline: time.Minute}
	var err error
	n.do(func() { _, err = StartGuard(context.Background(), 0, spec) })
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	n.do(func() { ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n.do(func() { _, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second) })
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect while reset: %v, want connection refused", err)
	}
	n.do(func() { err = StopGuard(context.Background(), 0, spec.Table) })
	if err != nil {
		t.Fatal(err)
	}
	n.do(func() { _, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second) })
	if err != nil {
		t.Errorf("connect after the release: %v", err)
	}
}

// TestGuardDrops: in "drop" mode a connection neither gets through nor is
// refused: the client waits (and would retransmit its SYN).
func TestGuardDrops(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 92
	spec := GuardSpec{Table: "inet mig-guard-test", Ports: []int{port}, NewConnections: NewDrop, Deadline: time.Minute}
	var err error
	n.do(func() { _, err = StartGuard(context.Background(), 0, spec) })
	if err != nil {
		t.Fatal(err)
	}
	defer n.do(func() { StopGuard(context.Background(), 0, spec.Table) })
	var ln net.Listener
	n.do(func() { ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n.do(func() { _, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 300*time.Millisecond) })
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("connect while dropped: %v, want a timeout", err)
	}
}

// TestTCPSockets lists this namespace's sockets through sock_diag: a
// listener and its connection, IPv4 and dual-stack alike (the latter
// unmapped), and a connection waiting in a listener's backlog.
func TestTCPSockets(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp"} {
		t.Run(network, func(t *testing.T) {
			l, err := net.Listen(network, "127.0.0.1:0")
			if network == "tcp" {
				l, err = net.Listen(network, "[::]:0")
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			port := l.Addr().(*net.TCPAddr).Port
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Not accepted yet: in the backlog.
			deadline := time.Now().Add(2 * time.Second)
			for pending(0, []int{port}) != 1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if n := pending(0, []int{port}); n != 1 {
				t.Errorf("pending = %d, want 1", n)
			}
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := pending(0, []int{port}); n != 0 {
				t.Errorf("pending after the accept = %d, want 0", n)
			}
			socks, err := tcpSockets(0, 1<<tcpEstablished|1<<tcpListen)
			if err != nil {
				t.Fatal(err)
			}
			mine := socketInodes(os.Getpid())
			var listener, conn bool
			for _, k := range socks {
				if !mine[k.Inode] {
					continue
				}
				switch {
				case k.State == tcpListen && int(k.Local.Port()) == port:
					listener = true
				case k.State == tcpEstablished && int(k.Local.Port()) == port:
					conn = true
					if k.Local.Addr().String() != "127.0.0.1" || k.Remote.String() != c.LocalAddr().String() {
						t.Errorf("accepted connection %s – %s, want 127.0.0.1:%d – %s", k.Local, k.Remote, port, c.LocalAddr())
					}
				}
			}
			if !listener || !conn {
				t.Errorf("listener found %v, accepted connection found %v, in %v", listener, conn, socks)
			}
			got := Connections([]int{os.Getpid()}, []int{port})
			if !slices.ContainsFunc(got, func(cn Conn) bool { return cn.Local.String() == c.LocalAddr().String() }) {
				t.Errorf("Connections = %v, want the client's %s", got, c.LocalAddr())
			}
			if slices.ContainsFunc(got, func(cn Conn) bool { return int(cn.Local.Port()) == port }) {
				t.Errorf("Connections = %v, want none from port %d", got, port)
			}
		})
	}
}

// TestWaitAccepted: a half-open connection (its last ACK of the handshake
// dropped) keeps waitAccepted waiting, and so does the connection once
// it is in the backlog; it returns when the listener has accepted it.
func TestWaitAccepted(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp"} {
		t.Run(network, func(t *testing.T) {
			n := newTestNetns(t)
			var ln net.Listener
			var err error
			n.do(func() {
				addr := "127.0.0.1:0"
				if network == "tcp" {
					addr = "[::]:0"
				}
				ln, err = net.Listen(network, addr)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			nftScript(t, n, fmt.Sprintf("table inet waittest { chain out { type filter hook output priority 0; tcp dport %d tcp flags & (syn | ack) == ack drop; }; }", port))
			var c net.Conn
			n.do(func() { c, err = net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			half := 0
			n.do(func() { half = pending(0, []int{port}) })
			if half != 1 {
				t.Fatalf("pending = %d with the handshake's last ACK dropped, want 1", half)
			}

			done := make(chan time.Time, 1)
			go n.do(func() {
				waitAccepted(context.Background(), 0, []int{port}, 10*time.Second)
				done <- time.Now()
			})
			stillWaiting := func(why string) {
				time.Sleep(300 * time.Millisecond)
				select {
				case <-done:
					t.Fatalf("waitAccepted returned with %s", why)
				default:
				}
			}
			stillWaiting("a half-open connection")
			nftScript(t, n, "delete table inet waittest")
			if _, err := c.Write([]byte("x")); err != nil { // its ACK ends the handshake
				t.Fatal(err)
			}
			stillWaiting("a connection in the backlog")
			// The backlog empties inside accept(2), before it returns: the
			// wait may end then, but not before the call.
			accepting := time.Now()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			select {
			case at := <-done:
				if at.Before(accepting) {
					t.Errorf("waitAccepted returned %s before the accept", accepting.Sub(at))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("waitAccepted still waits after the accept")
			}
		})
	}
}

// BenchmarkGuardRelease measures how long a segment that a target's guard
// held takes to reach its socket once the guard is told to release it
// (ns/op is that time; starting the guard and holding are not counted).
func BenchmarkGuardRelease(b *testing.B) {
	n := newTestNetns(b)
	const port = testPortBase + 96
	how := queueOrSkip(b, n)
	c, s := connectedPair(b, n, port)
	var err error
	spec := GuardSpec{Table: "inet mig-guard-bench", Ports: []int{port}, NewConnections: NewHold, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Minute}
	defer n.do(func() { StopGuard(context.Background(), 0, spec.Table) })
	var total time.Duration
	for i := 0; i < b.N; i++ {
		n.do(func() { _, err = StartGuard(context.Background(), 0, spec) })
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			buf := make([]byte, 5)
			io.ReadFull(s, buf)
			got <- time.Now()
		}()
		if _, err := c.Write([]byte("hello")); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // queued by now
		released := time.Now()
		n.do(func() { SignalGuard(spec.Table) })
		total += (<-got).Sub(released)
		n.do(func() { err = StopGuard(context.Background(), 0, spec.Table) })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
}

// BenchmarkGuardHold measures the CPU time a guard spends holding the
// SYNs of 2,000 clients, as a source's guard does while a busy server is
// frozen: time taken from CRIU and the images' transfer on the same host
// (cpu-ms/op is the guard's user and system time).
func BenchmarkGuardHold(b *testing.B) {
	n := newTestNetns(b)
	const port, clients = testPortBase + 88, 2000
	how := queueOrSkip(b, n)
	spec := GuardSpec{Table: "inet mig-guard-holdbench", Ports: []int{port}, NewConnections: NewHold, Queue: how, Deadline: time.Minute}
	var cpu time.Duration
	for b.Loop() {
		var pid int
		var err error
		n.do(func() { pid, err = StartGuard(context.Background(), 0, spec) })
		if err != nil {
			b.Fatal(err)
		}
		start := cpuOf(b, pid)
		fds := connectMany(b, n, port, clients)
		// Until the guard has read them all.
		for prev := time.Duration(-1); ; {
			time.Sleep(100 * time.Millisecond)
			now := cpuOf(b, pid)
			if now == prev {
				break
			}
			prev = now
		}
		cpu += cpuOf(b, pid) - start
		n.do(func() { err = StopGuard(context.Background(), 0, spec.Table) })
		closeAll(fds)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuOf is the user and system time pid has used.
func cpuOf(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// connectedPair listens on port in n and connects to it there: the
// client's and the server's ends, closed when the test ends.
func connectedPair(tb testing.TB, n *testNetns, port int) (client, server net.Conn) {
	tb.Helper()
	return connectedPairOn(tb, n, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
}

// connectedPairOn is connectedPair on any address.
func connectedPairOn(tb testing.TB, n *testNetns, addr netip.AddrPort) (client, server net.Conn) {
	tb.Helper()
	var ln net.Listener
	var err error
	n.do(func() {
		if ln, err = net.Listen("tcp", addr.String()); err == nil {
			client, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	tb.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close() })
	return client, server
}

// pending counts the connections to ports that the listeners have not
// accepted yet: their accept queues and the half-open ones.
func pending(pid int, ports []int) int {
	socks, _ := tcpSockets(pid, 1<<tcpSynRecv|1<<tcpListen)
	half, queued := pendingIn(socks, ports)
	return len(half) + queued
}

// TestGuardHoldsUDP: a datagram to a guarded UDP port with no socket yet
// (a target before the restore) is held, not answered with an ICMP port
// unreachable (which a connected client reads as "connection refused"),
// and reaches the socket bound there once the guard is released. The
// inventory finds the server's port and not the client's.
func TestGuardHoldsUDP(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 98
	how := queueOrSkip(t, n)
	spec := GuardSpec{Table: "inet mig-guard-test", UDPPorts: []int{port}, NewConnections: NewHold, Queue: how,
		Established: true, HoldEstablished: true, Deadline: time.Minute}
	startTestGuard(t, n, spec)
	var client *net.UDPConn
	var err error
	n.do(func() { client, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}) })
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var ne net.Error
	if _, err := client.Read(make([]byte, 16)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read while held: %v, want a timeout (no ICMP port unreachable)", err)
	}
	var server *net.UDPConn
	n.do(func() { server, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}) })
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var ports []int
	n.do(func() { ports = udpServerPortsIn(0, []int{os.Getpid()}) })
	if !slices.Equal(ports, []int{port}) {
		t.Errorf("udpServerPorts = %v, want [%d] (the client's socket is connected)", ports, port)
	}
	n.do(func() { err = StopGuard(context.Background(), 0, spec.Table) })
	if err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	got, err := server.Read(buf)
	if err != nil || string(buf[:got]) != "held" {
		t.Fatalf("the held datagram: %q, %v", buf[:got], err)
	}
}

// TestWaitRead: the wait before a dump lasts until the datagrams that
// came before the hold are read, since CRIU would drop them.
func TestWaitRead(t *testing.T) {
	n := newTestNetns(t)
	const port = testPortBase + 99
	var server, client *net.UDPConn
	var err error
	n.do(func() {
		if server, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
			client, err = net.DialUDP("udp4", nil, server.LocalAddr().(*net.UDPAddr))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	defer client.Close()
	for range 3 {
		client.Write([]byte("queued"))
	}
	wait := func() time.Duration {
		start := time.Now()
		n.do(func() { waitRead(context.Background(), 0, []int{port}, 2*time.Second) })
		return time.Since(start)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		buf := make([]byte, 16)
		for range 3 {
			server.Read(buf)
		}
	}()
	if took := wait(); took < 90*time.Millisecond || took > time.Second {
		t.Errorf("waited %s with datagrams unread for 100ms", took)
	}
	if took := wait(); took > 50*time.Millisecond {
		t.Errorf("waited %s with nothing queued", took)
	}
}
