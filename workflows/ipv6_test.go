package workflows_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// useIPv6 gives the lab an IPv6 prefix of its own (the root namespace and
// each host an address in it, as a network would) and the counter's
// service address in it, on h1, for the rest of the test: the clients
// and the workflows' service_ip use it.
func useIPv6(t *testing.T) {
	t.Helper()
	o := strings.Split(labNet, ".")
	prefix := fmt.Sprintf("fd6d:6967:%s:%s::", o[1], o[2])
	// As ip prints it.
	vip := netip.MustParseAddr(prefix + "100").String()
	ctx := context.Background()
	bridgeAddr(t, prefix+"1")
	labRun(t, "h1", "ip", "-6", "addr", "add", prefix+"11/64", "dev", "eth0", "nodad")
	labRun(t, "h2", "ip", "-6", "addr", "add", prefix+"12/64", "dev", "eth0", "nodad")
	labRun(t, "h1", "ip", "-6", "addr", "add", vip+"/64", "dev", "eth0", "nodad")
	exec.Command("ip", "-6", "neigh", "flush", "to", vip).Run()
	serviceAddr, clientIP = vip, netip.MustParseAddr(prefix+"2").String()
	t.Cleanup(func() {
		serviceAddr, clientIP = serviceIP, labNet+".2"
		for i, h := range []string{"h1", "h2"} {
			for _, a := range []string{vip, fmt.Sprintf("%s1%d", prefix, i+1)} {
				theLab.Exec(ctx, h, []string{"ip", "-6", "addr", "del", a + "/64", "dev", "eth0"}, nil, io.Discard, io.Discard)
			}
		}
	})
}

// TestClientsLazyIPv6 moves the counter behind an IPv6 service address
// with the clients running: the address is usable on the target at once
// and announced with neighbour advertisements, the connections' packets
// are held through the pause, and the SYNs held on the source follow the
// address, so no client sees an error or a retransmission's wait.
func TestClientsLazyIPv6(t *testing.T) {
	needLab(t)
	useIPv6(t)
	cl := moveWithClients(t, ipv6Workflow(t, "lazy.hcl"), "")
	cl.noSYNRetransmit(t)
}

// TestClientsIPv6: the same through a page-server move, and a container's
// lazy move.
func TestClientsIPv6(t *testing.T) {
	for _, tc := range []struct{ workflow, container string }{
		{"pageserver.hcl", ""},
		{"container-lazy.hcl", "cl6-lazy"},
	} {
		t.Run(tc.workflow, func(t *testing.T) {
			needLab(t)
			useIPv6(t)
			cl := moveWithClients(t, ipv6Workflow(t, tc.workflow), tc.container)
			cl.noSYNRetransmit(t)
		})
	}
}

// ipv6Workflow writes a copy of a shipped workflow (a file, or a
// directory of them) for an IPv6 service address: the address's prefix is
// a /64, and URLs bracket it.
func ipv6Workflow(t *testing.T, name string) string {
	t.Helper()
	rewrite := func(src, dst string) bool {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), `"${var.service_ip}/24"`, `"${var.service_ip}/64"`)
		s = strings.ReplaceAll(s, "http://${var.service_ip}:", "http://[${var.service_ip}]:")
		if err := os.WriteFile(dst, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return s != string(b)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(name))
	files := []string{name}
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		files, _ = filepath.Glob(filepath.Join(name, "*.hcl"))
	}
	changed := false
	for _, f := range files {
		dst := out
		if f != name {
			dst = filepath.Join(out, filepath.Base(f))
		}
		changed = rewrite(f, dst) || changed
	}
	if !changed {
		t.Fatalf("%s: no service address to rewrite", name)
	}
	return out
}

// TestHoldKillIPv6: mig killed during a lazy move of an IPv6 service
// address, once the source is frozen and once the target serves: the hosts
// finish the run on their own, the address ends with the workload, and
// nothing is left behind (as TestHoldKill checks for IPv4).
func TestHoldKillIPv6(t *testing.T) {
	for _, ph := range []phase{held, served} {
		t.Run(ph.name, func(t *testing.T) {
			needLab(t)
			useIPv6(t)
			trial(t, ipv6Workflow(t, "testdata/hold-lazy"), ph, syscall.SIGKILL)
		})
	}
}
