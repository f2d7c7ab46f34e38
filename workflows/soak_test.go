package workflows_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mig-project/mig/engine"
)

// TestSoak moves the counter back and forth between the lab's hosts
// MIG_SOAK times (make soak: 100), alternating strategies, while clients
// read it. Every client's counts must only go up, and nothing may leak:
// processes, mounts, nft tables, the counter's fds, listening ports, and
// mig's peak RSS must stay flat from the first moves to the last.
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MIG_SOAK"))
	if n <= 0 {
		t.Skip("set MIG_SOAK=N (make soak) to move the counter N times")
	}
	needLab(t)
	s := startCounter(t)
	strategies := []string{"cold.hcl", "pageserver.hcl", "lazy.hcl"}
	h1, _ := theLab.Host("h1")
	h2, _ := theLab.Host("h2")
	ips := map[string]string{"h1": h1.IP, "h2": h2.IP}

	before := snapshot(t)
	clients := startSoakClients(4)
	var rss []int64
	var seconds []float64
	from, to := "h1", "h2"
	pidfile := s.pidfile
	for i := 0; i < n; i++ {
		strategy := strategies[i%len(strategies)]
		state := t.TempDir()
		args := []string{"apply", "-state-dir", state,
			"-var", "lab=" + theLab.Dir(),
			"-var", "source_address=" + ips[from] + ":22",
			"-var", "target_address=" + ips[to] + ":22",
			"-var", "service_ip=" + serviceIP,
			"-var", "pidfile=" + pidfile,
			strategy}
		cmd := exec.Command(migBin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		cmd.Run()
		seconds = append(seconds, time.Since(start).Seconds())
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			clients.stop()
			t.Fatalf("move %d (%s, %s → %s) exited %d\n%s", i+1, strategy, from, to, code, out.String())
		}
		rss = append(rss, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
		recs, err := engine.ListRecords(state)
		if err != nil || len(recs) != 1 {
			t.Fatalf("move %d: records %v", i+1, err)
		}
		pid := output(t, recs[0], "step.start", "pid").(float64)
		pidfile = filepath.Join(theLab.Dir(), fmt.Sprintf("soak-%d.pid", i))
		if err := os.WriteFile(pidfile, []byte(strconv.Itoa(int(pid))), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(pidfile)
		from, to = to, from
		if (i+1)%10 == 0 {
			t.Logf("%d moves; last took %.1fs, mig peak RSS %d KiB", i+1, seconds[i], rss[i])
		}
	}
	reads, errs, backwards := clients.stop()
	after := snapshot(t)

	t.Logf("%d moves in %.0fs (median %.2fs per move); clients made %d reads, %d failed, %d went backwards",
		n, total(seconds), median(seconds), reads, errs, backwards)
	for _, why := range clients.why {
		t.Logf("a failed read: %s", why)
	}
	k := min(10, len(rss))
	first, last := meanInt(rss[:k]), meanInt(rss[len(rss)-k:])
	t.Logf("mig peak RSS: first %d moves %d KiB, last %d moves %d KiB", k, first, k, last)
	if backwards > 0 {
		t.Errorf("a client's count went backwards %d times", backwards)
	}
	if last > first*3/2 {
		t.Errorf("mig's peak RSS grew from %d KiB to %d KiB", first, last)
	}
	for _, d := range before.diff(after) {
		t.Error(d)
	}
}

// hostState is what a leak would change on the lab's hosts.
type hostState struct {
	counters   int
	counterFDs int
	criu       int
	mounts     map[string]int
	nft        map[string]string
	ports      map[string]string
}

func snapshot(t *testing.T) hostState {
	ctx := context.Background()
	hs := hostState{mounts: map[string]int{}, nft: map[string]string{}, ports: map[string]string{}}
	for _, h := range []string{"h1", "h2"} {
		pids := pidsOn(t, h)
		hs.counters += len(pids)
		for _, pid := range pids {
			out, _ := theLab.Output(ctx, h, "sh", "-c", "ls /proc/$0/fd | wc -l", pid)
			n, _ := strconv.Atoi(strings.TrimSpace(out))
			hs.counterFDs += n
		}
		out, _ := theLab.Output(ctx, h, "sh", "-c", `for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in */criu) echo ${p#/proc/};; esac; done`)
		hs.criu += len(strings.Fields(out))
		out, _ = theLab.Output(ctx, h, "cat", "/proc/self/mountinfo")
		hs.mounts[h] = len(strings.Split(strings.TrimSpace(out), "\n"))
		out, _ = theLab.Output(ctx, h, "nft", "list", "tables")
		hs.nft[h] = strings.TrimSpace(out)
		out, _ = theLab.Output(ctx, h, "sh", "-c", `awk 'NR>1 && $4=="0A" {print $2}' /proc/net/tcp /proc/net/tcp6 | sed 's/.*://' | sort -u | tr '\n' ' '`)
		hs.ports[h] = strings.TrimSpace(out)
	}
	return hs
}

// diff lists what changed from a to b, allowing the counter and its ports
// to have moved host.
func (a hostState) diff(b hostState) []string {
	var d []string
	if a.counters != 1 || b.counters != 1 {
		d = append(d, fmt.Sprintf("counters running: %d before, %d after", a.counters, b.counters))
	}
	if b.counterFDs != a.counterFDs {
		d = append(d, fmt.Sprintf("the counter's open fds: %d before, %d after", a.counterFDs, b.counterFDs))
	}
	if b.criu != 0 {
		d = append(d, fmt.Sprintf("%d CRIU processes left", b.criu))
	}
	for _, h := range []string{"h1", "h2"} {
		if a.mounts[h] != b.mounts[h] {
			d = append(d, fmt.Sprintf("%s: %d mounts before, %d after", h, a.mounts[h], b.mounts[h]))
		}
		if a.nft[h] != b.nft[h] {
			d = append(d, fmt.Sprintf("%s: nft tables %q before, %q after", h, a.nft[h], b.nft[h]))
		}
	}
	all := func(s hostState) string {
		p := strings.Fields(s.ports["h1"] + " " + s.ports["h2"])
		sort.Strings(p)
		return strings.Join(p, " ")
	}
	if all(a) != all(b) {
		d = append(d, fmt.Sprintf("listening ports %q before, %q after", all(a), all(b)))
	}
	return d
}

// soakClients read the counter continuously; each checks that its counts only
// go up.
type soakClients struct {
	stopc                  chan struct{}
	wg                     sync.WaitGroup
	mu                     sync.Mutex
	reads, errs, backwards int
	why                    []string // the first failed reads' errors
}

func startSoakClients(n int) *soakClients {
	c := &soakClients{stopc: make(chan struct{})}
	for range n {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			last := 0
			for {
				select {
				case <-c.stopc:
					return
				case <-time.After(10 * time.Millisecond):
				}
				v, err := count()
				c.mu.Lock()
				c.reads++
				switch {
				case err != nil:
					c.errs++
					if len(c.why) < 5 {
						c.why = append(c.why, err.Error())
					}
				case v < last:
					c.backwards++
				default:
					last = v
				}
				c.mu.Unlock()
			}
		}()
	}
	return c
}

func (c *soakClients) stop() (reads, errs, backwards int) {
	select {
	case <-c.stopc:
	default:
		close(c.stopc)
	}
	c.wg.Wait()
	return c.reads, c.errs, c.backwards
}

func total(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

func meanInt(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	var s int64
	for _, x := range xs {
		s += x
	}
	return s / int64(len(xs))
}
