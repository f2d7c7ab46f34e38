package netaddr

import (
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNetns runs f on a thread of its own in a new network namespace, which
// goes with the thread: the thread is never unlocked, so it exits.
func inNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// TestCheck: what plan finds wrong before a move, each case in a network
// namespace of veth interfaces (this kernel has no dummy ones).
func TestCheck(t *testing.T) {
	inNetns(t, func() {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Error(err)
				runtime.Goexit()
			}
		}
		dummy := func(name string, up bool, addrs ...string) netlink.Link {
			t.Helper()
			must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}))
			l, err := netlink.LinkByName(name)
			must(err)
			for _, a := range addrs {
				addr, err := netlink.ParseAddr(a)
				must(err)
				addr.Flags = unix.IFA_F_NODAD
				must(netlink.AddrAdd(l, addr))
			}
			if up {
				must(netlink.LinkSetUp(l))
			}
			return l
		}
		set := func(name, v string) {
			t.Helper()
			must(os.WriteFile("/proc/sys/net/"+name, []byte(v), 0o644))
		}
		set("ipv4/conf/all/promote_secondaries", "0")
		set("ipv4/conf/default/promote_secondaries", "0")
		dummy("solo0", true, "10.9.0.100/24", "fd00:9::100/64")
		dummy("other0", true, "10.7.0.100/32")
		dummy("pair0", true, "10.8.0.100/24", "10.8.0.11/24", "fd00:8::100/64", "fd00:8::11/64")
		dummy("off0", false)
		dummy("noip60", true)
		set("ipv6/conf/noip60/disable_ipv6", "1")

		check := func(role, addr, ifname string) (problems, warnings string) {
			t.Helper()
			res, err := Check(CheckRequest{Address: addr, Interface: ifname, Role: role})
			must(err)
			return strings.Join(res.Problems, "\n"), strings.Join(res.Warnings, "\n")
		}
		for _, c := range []struct {
			role, addr, ifname string
			problem, warning   string // substrings; "" wants none
		}{
			{"from", "10.9.0.100/24", "eth9", `no interface "eth9" (it has lo, solo0`, ""},
			{"from", "10.7.0.100/24", "solo0", "10.7.0.100 is on other0, not on solo0", ""},
			{"from", "10.7.0.100/24", "other0", "as /32, and the removal of a /24 would fail: give the address as 10.7.0.100/32", ""},
			{"from", "10.6.0.100/24", "solo0", "", "10.6.0.100 is not on solo0 now"},
			// The only address of its subnet, and no other route to it.
			{"from", "10.9.0.100/24", "solo0", "", "this host has no route to it"},
			{"from", "fd00:9::100/64", "solo0", "", "this host has no route to it"},
			// Another address of the subnet stays, and the secondary goes
			// with its primary.
			{"from", "10.8.0.11/24", "pair0", "", ""},
			{"from", "fd00:8::100/64", "pair0", "", ""},
			{"from", "10.8.0.100/24", "pair0", "would remove 10.8.0.11/24 too", ""},
			{"to", "10.4.0.100/24", "off0", "interface off0 is down", ""},
			{"to", "fd00:5::100/64", "noip60", "IPv6 is disabled on noip60", ""},
			{"to", "10.9.0.100/24", "solo0", "", "10.9.0.100 is on solo0 already"},
			{"to", "10.7.0.100/32", "solo0", "", "is on other0 already, and stays there"},
			{"to", "10.5.0.100/24", "solo0", "", ""},
		} {
			p, w := check(c.role, c.addr, c.ifname)
			if (c.problem == "") != (p == "") || !strings.Contains(p, c.problem) {
				t.Errorf("%s %s %s: problems %q, want %q", c.role, c.addr, c.ifname, p, c.problem)
			}
			if (c.warning == "") != (w == "") || !strings.Contains(w, c.warning) {
				t.Errorf("%s %s %s: warnings %q, want %q", c.role, c.addr, c.ifname, w, c.warning)
			}
		}

		// Promoted secondaries stay; a route, or a default route, keeps
		// the address reachable.
		set("ipv4/conf/pair0/promote_secondaries", "1")
		if p, _ := check("from", "10.8.0.100/24", "pair0"); p != "" {
			t.Errorf("with promote_secondaries: %s", p)
		}
		l, err := netlink.LinkByName("other0")
		must(err)
		_, dst, _ := net.ParseCIDR("10.9.0.0/16")
		must(netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}))
		if _, w := check("from", "10.9.0.100/24", "solo0"); w != "" {
			t.Errorf("with a route to 10.9.0.0/16: %s", w)
		}
		must(netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}))
		if _, w := check("from", "fd00:9::100/64", "solo0"); w != "" {
			t.Errorf("with a default route: %s", w)
		}
	})
}
