package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/mig-project/mig/steps/criu"
)

// TestPhase runs one driver call named by MIG_CONTAINER_PHASE, so that a
// move between lab hosts can be driven by hand, one `mig lab exec` per
// step, with the test binary inside each host:
//
//	MIG_CONTAINER_PHASE=bundle|start|resolve|dump|dump-lazy|resume|kill|restore|restore-lazy|lazy-wait|kill-restored
//	MIG_CONTAINER_BUNDLE='{"dir":"/shared/bundle","program":"/shared/counter","args":["/bin/counter"]}' (bundle)
//	MIG_CONTAINER_CONFIG='{"id":"c1","restore_id":"c2","bundle":"/shared/bundle"}'
//	MIG_CONTAINER_DIR=/shared/images
//	MIG_CONTAINER_ADDR=10.77.0.11:7000 (dump-lazy, restore-lazy: the source's page server)
//	MIG_CONTAINER_LAZY_PID=123 (lazy-wait)
//
// dump and restore print their result as JSON.
func TestPhase(t *testing.T) {
	phase := os.Getenv("MIG_CONTAINER_PHASE")
	if phase == "" {
		t.Skip("set MIG_CONTAINER_PHASE")
	}
	var c Config
	if err := json.Unmarshal([]byte(os.Getenv("MIG_CONTAINER_CONFIG")), &c); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, env := NewDriver(), driverEnv(t)
	w := workload(t, c)
	dir := os.Getenv("MIG_CONTAINER_DIR")
	held := criu.Held{Dir: dir}
	var out any
	var err error
	switch phase {
	case "bundle":
		var b Bundle
		if err := json.Unmarshal([]byte(os.Getenv("MIG_CONTAINER_BUNDLE")), &b); err != nil {
			t.Fatal(err)
		}
		err = b.Build()
	case "start":
		var pid int
		pid, err = Runtime{Root: c.Root}.Start(c.ID, c.Bundle)
		out = pid
	case "resolve":
		out, err = d.Resolve(ctx, env, w)
	case "dump":
		out, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir})
	case "dump-lazy":
		out, err = d.Dump(ctx, env, w, criu.DumpRequest{Dir: dir, Lazy: true, Listen: lazyAddr(t)})
	case "restore-lazy":
		out, err = d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir, Lazy: true, Source: lazyAddr(t)})
	case "lazy-wait":
		pid, _ := strconv.Atoi(os.Getenv("MIG_CONTAINER_LAZY_PID"))
		out, err = criu.LazyWait(ctx, criu.LazyWaitRequest{Dir: dir, PID: pid, Timeout: 60})
	case "resume":
		err = d.Resume(ctx, env, w, held)
	case "kill":
		err = d.Kill(ctx, env, w, held)
	case "restore":
		out, err = d.Restore(ctx, env, w, criu.RestoreRequest{Dir: dir})
	case "kill-restored":
		err = d.KillRestored(ctx, env, w, criu.RestoreResult{})
	default:
		t.Fatalf("unknown phase %q", phase)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

func lazyAddr(t *testing.T) *criu.Addr {
	t.Helper()
	host, port, err := net.SplitHostPort(os.Getenv("MIG_CONTAINER_ADDR"))
	if err != nil {
		t.Fatalf("MIG_CONTAINER_ADDR: %v", err)
	}
	p, _ := strconv.Atoi(port)
	return &criu.Addr{Host: host, Port: p}
}
