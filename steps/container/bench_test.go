package container

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mig-project/mig/steps/criu"
)

// prober GETs url on fresh connections every interval and records the
// longest gap between two successful answers.
type prober struct {
	stop    chan struct{}
	done    sync.WaitGroup
	mu      sync.Mutex
	last    time.Time
	longest time.Duration
	failed  int
}

func probe(url string, interval time.Duration) *prober {
	p := &prober{stop: make(chan struct{}), last: time.Now()}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			_, err := get(url)
			now := time.Now()
			p.mu.Lock()
			if err != nil {
				p.failed++
			} else {
				if gap := now.Sub(p.last); gap > p.longest {
					p.longest = gap
				}
				p.last = now
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) Stop() (time.Duration, int) {
	close(p.stop)
	p.done.Wait()
	return p.longest, p.failed
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

// TestBenchCold compares mig's container driver with the runc CLI on the
// same machine: the counter with 256 MiB of ballast, host network, images
// on local disk, checkpoint then restore under a new ID, a client probing
// every 5 ms. Five runs each; it prints the medians. Run with
// MIG_CONTAINER_BENCH=1 go test -run TestBenchCold -v ./steps/container
func TestBenchCold(t *testing.T) {
	if os.Getenv("MIG_CONTAINER_BENCH") == "" {
		t.Skip("set MIG_CONTAINER_BENCH=1")
	}
	ctx := context.Background()
	r := testRuntime(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	const addr = "127.0.0.1:18933"
	// runc 1.1.5 has no --tcp-skip-in-flight: hand CRIU the option through
	// the bundle's CRIU config file, as an operator would.
	conf := filepath.Join(tmp, "runc-criu.conf")
	if err := os.WriteFile(conf, []byte("skip-in-flight\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := Bundle{
		Dir:         filepath.Join(tmp, "bundle"),
		Program:     buildCounter(t, tmp),
		Args:        []string{"/bin/counter", "-listen", addr, "-ballast", "256"},
		Annotations: map[string]string{criuConfigLabel: conf},
	}
	if err := b.Build(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr + "/"
	d, env := NewDriver(), driverEnv(t)
	path := filepath.Dir(r.CRIU) + ":" + os.Getenv("PATH")

	var migDump, migRest, migGap, cliDump, cliRest, cliGap []time.Duration
	for i := range 5 {
		// mig: held dump, commit, restore.
		src, dst := fmt.Sprintf("etest-bm%d", i), fmt.Sprintf("etest-bm%d-r", i)
		cleanup(t, r, src, dst)
		if _, err := r.Start(src, b.Dir); err != nil {
			t.Fatal(err)
		}
		counterValue(t, url)
		w := workload(t, Config{ID: src, Root: r.Root, RestoreID: dst})
		p := probe(url, 5*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
		dir := filepath.Join(tmp, src)
		t0 := time.Now()
		dump, err := d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := d.Kill(ctx, env, w, dump.Held); err != nil {
			t.Fatal(err)
		}
		t2 := time.Now()
		if _, err := d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		t3 := time.Now()
		counterValue(t, url)
		time.Sleep(100 * time.Millisecond)
		gap, _ := p.Stop()
		migDump, migRest, migGap = append(migDump, t1.Sub(t0)), append(migRest, t3.Sub(t2)), append(migGap, gap)
		r.Destroy(dst)
		os.RemoveAll(dir)

		// The runc CLI, as an operator runs it by hand.
		src, dst = fmt.Sprintf("etest-bc%d", i), fmt.Sprintf("etest-bc%d-r", i)
		cleanup(t, r, src, dst)
		runcCLI(t, r.Root, b.Dir, src)
		counterValue(t, url)
		p = probe(url, 5*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
		dir = filepath.Join(tmp, src)
		t0 = time.Now()
		cli := exec.Command(runc, "--root", r.Root, "checkpoint", "--image-path", dir, src)
		cli.Env = append(os.Environ(), "PATH="+path)
		if out, err := cli.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
			t.Fatalf("runc checkpoint: %v: %s\n%s", err, out, criuLogTail(filepath.Join(dir, "dump.log"))+string(log[max(0, len(log)-1500):]))
		}
		t1 = time.Now()
		inR, inW, _ := os.Pipe()
		outR, outW, _ := os.Pipe()
		inW.Close()
		outR.Close()
		cli = exec.Command(runc, "--root", r.Root, "restore", "-d", "--image-path", dir, "--bundle", b.Dir, dst)
		cli.Env = append(os.Environ(), "PATH="+path)
		cli.Stdin, cli.Stdout, cli.Stderr = inR, outW, outW
		err = cli.Run()
		inR.Close()
		outW.Close()
		if err != nil {
			t.Fatalf("runc restore: %v", err)
		}
		t2 = time.Now()
		counterValue(t, url)
		time.Sleep(100 * time.Millisecond)
		gap, _ = p.Stop()
		cliDump, cliRest, cliGap = append(cliDump, t1.Sub(t0)), append(cliRest, t2.Sub(t1)), append(cliGap, gap)
		r.Destroy(dst)
		os.RemoveAll(dir)
	}
	t.Logf("counter, 256 MiB ballast, host network, local disk; medians of 5")
	t.Logf("%-22s %10s %10s %14s", "", "checkpoint", "restore", "client outage")
	t.Logf("%-22s %10s %10s %14s", "mig (libcontainer)", ms(median(migDump)), ms(median(migRest)), ms(median(migGap)))
	t.Logf("%-22s %10s %10s %14s", "runc 1.1.5 CLI", ms(median(cliDump)), ms(median(cliRest)), ms(median(cliGap)))
	t.Logf("raw mig: %v %v %v", migDump, migRest, migGap)
	t.Logf("raw cli: %v %v %v", cliDump, cliRest, cliGap)
}
