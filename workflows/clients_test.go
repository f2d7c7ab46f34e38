package workflows_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The client tests run, through a whole move, the clients that issue 10
// says users run: a keep-alive HTTP client, a client that opens a new
// connection per request, a kept raw TCP connection (the counter's echo
// port), a large download checked byte by byte, and a UDP client (the
// counter's UDP port) that sends again after 250 ms without an answer, as
// a resolver does. None of them may see an error, and the kept connections
// must still work afterwards.

// clients is the set of clients running against the service address.
type clients struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	local *net.TCPAddr // clientIP

	mu       sync.Mutex
	results  map[string]*clientResult
	ports    map[int]bool // local ports of every connection the clients opened
	closed   map[int]bool // and of those the clients have closed
	kept     net.Conn     // the raw connection, still open when they stop
	udp      *net.UDPConn // the UDP client's connected socket
	keepHTTP *http.Client
}

// clientResult is what one client saw.
type clientResult struct {
	requests, failed, resets int
	newConns                 int // connections a keep-alive client opened
	resent                   int // datagrams the UDP client sent again
	slowest                  time.Duration
	errs                     []string
}

func (r *clientResult) String() string {
	return fmt.Sprintf("%d requests, %d failed (%d resets), slowest %s, %d connections, %d resent", r.requests, r.failed, r.resets, r.slowest.Round(time.Millisecond), r.newConns, r.resent)
}

// streamBytes is the size of the download that runs through the move;
// it takes about 4 s at the rate it is sent.
const streamBytes = 48 << 20

func startClients(t *testing.T) *clients {
	t.Helper()
	bridgeAddr(t, clientIP)
	ctx, cancel := context.WithCancel(context.Background())
	c := &clients{ctx: ctx, cancel: cancel, results: map[string]*clientResult{}, ports: map[int]bool{}, closed: map[int]bool{},
		local: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	base := "http://" + serviceAt(port)
	// Long timeouts: a pause is fine, an error is not.
	c.keepHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DialContext: c.dial}}
	fresh := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: c.dial}}
	c.loop("keep-alive", 10*time.Millisecond, func(r *clientResult) error {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				r.newConns++
				if r.newConns > 1 {
					r.errs = append(r.errs, fmt.Sprintf("%s: a new connection from %s", time.Now().Format("15:04:05.000"), i.Conn.LocalAddr()))
				}
			}
		}}
		// Not ctx: a request cancelled at the end would close the kept
		// connection.
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", base+"/", nil)
		return do(c.keepHTTP, req)
	})
	c.loop("new-connection", 10*time.Millisecond, func(r *clientResult) error {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", base+"/", nil)
		return do(fresh, req)
	})
	conn, err := c.dial(ctx, "tcp", serviceAt(echoPort))
	if err != nil {
		t.Fatal(err)
	}
	c.kept = conn
	rd := bufio.NewReader(conn)
	n := 0
	c.loop("raw-tcp", 10*time.Millisecond, func(r *clientResult) error {
		n++
		return echo(conn, rd, n)
	})
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: c.local.IP}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(serviceAt(udpPort))))
	if err != nil {
		t.Fatal(err)
	}
	c.udp = udp
	c.udpLoad(udp)
	c.loop("download", 0, func(r *clientResult) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/stream?bytes=%d&chunk=%d&every=5ms", base, streamBytes, 64<<10), nil)
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: c.dial}}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return checkStream(resp.Body, streamBytes)
	})
	return c
}

// dial opens a connection and notes its local port, and when the client
// closes it.
func (c *clients) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: 30 * time.Second, LocalAddr: c.local}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	port := conn.LocalAddr().(*net.TCPAddr).Port
	c.mu.Lock()
	c.ports[port] = true
	c.mu.Unlock()
	return &notedConn{Conn: conn, closed: func() { c.mu.Lock(); c.closed[port] = true; c.mu.Unlock() }}, nil
}

// notedConn is a client's connection that notes its close.
type notedConn struct {
	net.Conn
	closed func()
}

func (n *notedConn) Close() error {
	n.closed()
	return n.Conn.Close()
}

// loop runs f every interval (once when interval is 0) until stop.
func (c *clients) loop(name string, interval time.Duration, f func(*clientResult) error) {
	r := &clientResult{}
	c.mu.Lock()
	c.results[name] = r
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			start := time.Now()
			err := f(r)
			took := time.Since(start)
			if c.ctx.Err() != nil && err != nil && interval == 0 {
				return // the download, stopped mid-request
			}
			c.mu.Lock()
			r.requests++
			r.slowest = max(r.slowest, took)
			if err != nil {
				r.failed++
				if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "reset") {
					r.resets++
				}
				if len(r.errs) < 5 {
					r.errs = append(r.errs, fmt.Sprintf("%s after %s: %v", start.Format("15:04:05.000"), took.Round(time.Millisecond), err))
				}
			}
			c.mu.Unlock()
			if interval == 0 || c.ctx.Err() != nil {
				return
			}
			time.Sleep(interval)
		}
	}()
}

func do(client *http.Client, req *http.Request) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	if _, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return fmt.Errorf("body %q", b)
	}
	return nil
}

// echo sends line n on the kept connection and reads it back.
func echo(conn net.Conn, rd *bufio.Reader, n int) error {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	want := fmt.Sprintf("line %d\n", n)
	if _, err := io.WriteString(conn, want); err != nil {
		return err
	}
	got, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("echo: got %q, want %q", got, want)
	}
	return nil
}

// udpLoad sends a datagram on conn every 5 ms, without waiting for the
// answers, and each again every 250 ms until its answer comes (as a
// resolver does), so that some are always in flight. Once the clients
// stop, it waits up to 5 s for the last answers; a datagram never answered
// fails, and so does a refusal (ECONNREFUSED: a host had no socket on the
// port and said so with an ICMP port unreachable).
func (c *clients) udpLoad(conn *net.UDPConn) {
	r := &clientResult{}
	c.mu.Lock()
	c.results["udp"] = r
	c.mu.Unlock()
	var mu sync.Mutex
	first, sent := map[int]time.Time{}, map[int]time.Time{} // of the datagrams not answered yet
	fail := func(err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		r.failed++
		if errors.Is(err, syscall.ECONNREFUSED) {
			r.resets++
		}
		if len(r.errs) < 5 {
			r.errs = append(r.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		buf := make([]byte, 256)
		var stopped time.Time
		for {
			conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			k, err := conn.Read(buf)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
			case err != nil:
				fail(err)
			default:
				var n, count int
				if _, err := fmt.Sscanf(string(buf[:k]), "u%d %d", &n, &count); err == nil {
					mu.Lock()
					if t, ok := first[n]; ok {
						c.mu.Lock()
						r.slowest = max(r.slowest, time.Since(t))
						c.mu.Unlock()
						delete(first, n)
						delete(sent, n)
					}
					mu.Unlock()
				}
			}
			if c.ctx.Err() != nil {
				if stopped.IsZero() {
					stopped = time.Now()
				}
				mu.Lock()
				left := len(first)
				mu.Unlock()
				if left == 0 || time.Since(stopped) > 5*time.Second {
					for n := range first {
						fail(fmt.Errorf("u%d: no answer", n))
					}
					return
				}
			}
		}
	}()
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			mu.Lock()
			first[n], sent[n] = now, now
			again := []int{n}
			for m, t := range sent {
				if now.Sub(t) >= 250*time.Millisecond {
					sent[m] = now
					again = append(again, m)
				}
			}
			mu.Unlock()
			c.mu.Lock()
			r.requests++
			r.resent += len(again) - 1
			c.mu.Unlock()
			for _, m := range again {
				if _, err := conn.Write(fmt.Appendf(nil, "u%d", m)); err != nil {
					fail(err)
				}
			}
		}
	}()
}

// ask sends datagram n on conn until its answer comes, again every 250 ms
// (as a resolver does), for at most 30 s. A host with no socket on the
// port answers with an ICMP port unreachable, which the connected socket
// reports as ECONNREFUSED: an error.
func ask(conn *net.UDPConn, n int, r *clientResult) error {
	q := fmt.Sprintf("u%d", n)
	buf := make([]byte, 256)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if _, err := conn.Write([]byte(q)); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		for {
			k, err := conn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.resent++
				break
			}
			if err != nil {
				return err
			}
			if strings.HasPrefix(string(buf[:k]), q+" ") {
				return nil
			}
			// The answer to a datagram sent again: read on.
		}
	}
	return fmt.Errorf("%s: no answer in 30s", q)
}

// streamByte is cmd/counter's /stream pattern.
func streamByte(i int64) byte { return byte(i*31) ^ byte(i>>11) }

// checkStream reads a /stream response and checks every byte.
func checkStream(r io.Reader, n int64) error {
	buf := make([]byte, 64<<10)
	var off int64
	for {
		m, err := r.Read(buf)
		for i := 0; i < m; i++ {
			if buf[i] != streamByte(off+int64(i)) {
				return fmt.Errorf("download: byte %d is %#x, want %#x", off+int64(i), buf[i], streamByte(off+int64(i)))
			}
		}
		off += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("download at byte %d: %w", off, err)
		}
	}
	if off != n {
		return fmt.Errorf("download: %d bytes, want %d", off, n)
	}
	return nil
}

// stop waits for the download, stops the clients, checks that the kept
// connections still work, and fails the test on any error a client saw.
func (c *clients) stop(t *testing.T) {
	t.Helper()
	// The download runs once; wait for it (it ends by itself).
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		done := c.results["download"].requests > 0
		c.mu.Unlock()
		if done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // some requests after the move
	c.cancel()
	c.wg.Wait()
	defer c.kept.Close()
	defer c.udp.Close()
	// Closed while the service runs: a connection left open until the
	// test process exits, after the lab is gone, would send its FIN for
	// minutes, and the next run's lab would reset it.
	defer c.keepHTTP.CloseIdleConnections()
	if err := ask(c.udp, 1_000_000, &clientResult{}); err != nil {
		t.Errorf("the UDP client's socket gets no answer: %v", err)
	}
	// The kept connections still work: the raw one echoes, and the
	// keep-alive client's connection serves one more request.
	if err := echo(c.kept, bufio.NewReader(c.kept), 1_000_000); err != nil {
		t.Errorf("the kept raw TCP connection broke: %v", err)
	}
	before := c.results["keep-alive"].newConns
	req, _ := http.NewRequest("GET", "http://"+serviceAt(port)+"/", nil)
	var reused bool
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	if err := do(c.keepHTTP, req); err != nil || !reused {
		t.Errorf("the keep-alive connection did not survive: err %v, reused %v", err, reused)
	}
	for _, name := range []string{"keep-alive", "new-connection", "raw-tcp", "download", "udp"} {
		r := c.results[name]
		t.Logf("client %-14s %s", name, r)
		if r.failed > 0 {
			t.Errorf("client %s: %d of %d requests failed (%d resets): %s", name, r.failed, r.requests, r.resets, strings.Join(r.errs, "; "))
		}
	}
	if before != 1 {
		t.Errorf("the keep-alive client opened %d connections, want 1: its connection broke (%s)", before, strings.Join(c.results["keep-alive"].errs, "; "))
	}
	if c.results["download"].requests != 1 {
		t.Errorf("the download did not finish")
	}
}

// noSYNRetransmit fails the test if a new connection waited a second or
// more: its SYN was lost and sent again on the client's timer, instead of
// being held.
func (c *clients) noSYNRetransmit(t *testing.T) {
	t.Helper()
	if r := c.results["new-connection"]; r.slowest >= time.Second {
		t.Errorf("a new connection waited %s: its SYN was lost and retransmitted, not held", r.slowest.Round(time.Millisecond))
	}
}

// rstCounter records the TCP resets a lab host sends from the service
// address to the clients' address, by the port they go to, with an nft
// set on its output.
type rstCounter struct{ host string }

const rstTable = "mig-test-rst"

func countResets(t *testing.T, h string) *rstCounter {
	t.Helper()
	labRun(t, h, "nft", "add", "table", "inet", rstTable)
	labRun(t, h, "nft", "add", "chain", "inet", rstTable, "out", "{ type filter hook output priority 0; policy accept; }")
	labRun(t, h, "nft", "add", "set", "inet", rstTable, "to", "{ type inet_service; flags dynamic; size 65536; }")
	family := "ip"
	if strings.Contains(serviceAddr, ":") {
		family = "ip6"
	}
	labRun(t, h, "nft", "add", "rule", "inet", rstTable, "out", family, "saddr", serviceAddr, family, "daddr", clientIP, "tcp", "flags", "rst", "add", "@to", "{", "tcp", "dport", "}", "counter")
	t.Cleanup(func() {
		theLab.Exec(context.Background(), h, []string{"nft", "delete", "table", "inet", rstTable}, nil, io.Discard, io.Discard)
	})
	return &rstCounter{host: h}
}

// resets returns how many resets the host sent so far, and the client
// ports they went to.
func (r *rstCounter) resets(t *testing.T) (int, []int) {
	t.Helper()
	out := labRun(t, r.host, "nft", "list", "table", "inet", rstTable)
	i := strings.Index(out, "packets ")
	if i < 0 {
		t.Fatalf("%s: no counter in\n%s", r.host, out)
	}
	n, _ := strconv.Atoi(strings.Fields(out[i+len("packets "):])[0])
	var ports []int
	if e := strings.Index(out, "elements = {"); e >= 0 {
		list := out[e+len("elements = {"):]
		list = list[:strings.IndexByte(list, '}')]
		for _, f := range strings.Split(list, ",") {
			if p, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				ports = append(ports, p)
			}
		}
	}
	return n, ports
}

// checkResets fails the test if the source or the target reset one of
// the clients' open connections (the kept ones are among the moved ones).
// Resets to connections their clients had closed (which no client can
// see), and to other ports, are logged: those are connections of an
// earlier test process, still closing (FIN-WAIT-1) in this namespace.
func (c *clients) checkResets(t *testing.T, src, dst *rstCounter) {
	t.Helper()
	for _, r := range []struct {
		name string
		c    *rstCounter
	}{{"target", dst}, {"source", src}} {
		n, ports := r.c.resets(t)
		var done, other []int
		for _, p := range ports {
			switch {
			case c.closed[p]:
				done = append(done, p)
			case c.ports[p]:
				t.Errorf("the %s reset a client's open connection (port %d)", r.name, p)
			default:
				other = append(other, p)
			}
		}
		if n > 0 {
			t.Logf("the %s sent %d resets from the service address: to connections their client had closed %v, to other ports %v", r.name, n, done, other)
		}
	}
}

// moveWithClients moves the counter (a process, or with name a container)
// with workflow while the clients run, and checks what they saw and that
// neither host reset one of their connections. It returns the clients,
// for more checks.
func moveWithClients(t *testing.T, workflow string, container string) *clients {
	needLab(t)
	var apply func() (int, string)
	if container != "" {
		c := startContainer(t, container)
		apply = func() (int, string) { _, code, out := c.apply(workflow); return code, out }
	} else {
		s := startCounter(t)
		apply = func() (int, string) { _, code, out := s.apply(t, workflow); return code, out }
	}
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	src, dst := countResets(t, "h1"), countResets(t, "h2")
	cl := startClients(t)
	time.Sleep(300 * time.Millisecond) // the download is under way
	code, out := apply()
	if code != 0 {
		cl.cancel()
		t.Fatalf("mig apply %s exited %d\n%s", workflow, code, out)
	}
	cl.stop(t)
	cl.checkResets(t, src, dst)
	arrived(t, before)
	return cl
}

func TestClientsLazy(t *testing.T)       { moveWithClients(t, "lazy.hcl", "") }
func TestClientsPageServer(t *testing.T) { moveWithClients(t, "pageserver.hcl", "") }
func TestClientsContainerLazy(t *testing.T) {
	moveWithClients(t, "container-lazy.hcl", "cl-lazy")
}

// TestClientsContainerPageServer: a container moved with a page-server
// final dump.
func TestClientsContainerPageServer(t *testing.T) {
	moveWithClients(t, "testdata/container-pageserver.hcl", "cl-ps")
}

// TestProbeUDP moves the counter with lazy.hcl and a probe of its UDP
// port besides the HTTP one: the probe, from new sockets and from a kept
// one, sees the pause and no error.
func TestProbeUDP(t *testing.T) {
	b, err := os.ReadFile("lazy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	workflow := filepath.Join(t.TempDir(), "lazy-udp.hcl")
	probe := fmt.Sprintf(`
probe "udp" {
  udp {
    address = "%s"
    send    = "ping"
    expect  = "ping "
  }
  interval = "5ms"
  timeout  = "5s"
}
`, strings.ReplaceAll(serviceAt(udpPort), serviceAddr, "${var.service_ip}"))
	if err := os.WriteFile(workflow, append(b, probe...), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := migrate(t, workflow)
	for _, p := range rec.Probes {
		if p.Name != "udp" {
			continue
		}
		s := p.Summary
		if !strings.HasPrefix(p.URL, "udp://") || s.Requests < 50 || s.Failed > 0 || s.LongestGap <= 0 || s.LongestGap > 1 {
			t.Errorf("udp probe %s: %d requests, %d failed, longest gap %.3fs", p.URL, s.Requests, s.Failed, s.LongestGap)
		}
		if s.Kept == nil || s.Kept.Requests == 0 || s.Kept.Failed > 0 || len(s.Kept.Breaks) > 0 {
			t.Errorf("udp probe's kept socket: %+v", s.Kept)
		}
		return
	}
	t.Fatal("no udp probe in the record")
}
