package steps

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/mig-project/mig/steps/criu"
)

func TestLoopbackPeers(t *testing.T) {
	ap := netip.MustParseAddrPort
	conns := []criu.Conn{
		// Both ends in the workload: moved together.
		{Local: ap("127.0.0.1:40000"), Remote: ap("127.0.0.1:6379")},
		{Local: ap("127.0.0.1:6379"), Remote: ap("127.0.0.1:40000")},
		// A local database that stays.
		{Local: ap("127.0.0.1:40002"), Remote: ap("127.0.0.1:5432")},
		// A client on the service address: not loopback.
		{Local: ap("10.0.0.100:8080"), Remote: ap("10.0.0.1:50000")},
	}
	got := loopbackPeers(`process "web"`, conns)
	if len(got) != 1 || !strings.Contains(got[0], "127.0.0.1:40002 → 127.0.0.1:5432") {
		t.Fatalf("got %q, want the connection to 127.0.0.1:5432 only", got)
	}
}

func TestLazyShortfall(t *testing.T) {
	if w := lazyShortfall("lazy", map[string]float64{"pages_written": 281, "pages_lazy": 36274}); w != "" {
		t.Errorf("a lazy dump that left most pages lazy: %q, want no warning", w)
	}
	if w := lazyShortfall("lazy", map[string]float64{"pages_written": 36623, "pages_lazy": 0}); !strings.Contains(w, "143 MiB in the freeze") {
		t.Errorf("a lazy dump that wrote every page: %q, want a warning with 143 MiB", w)
	}
	if w := lazyShortfall("disk", map[string]float64{"pages_written": 36623}); w != "" {
		t.Errorf("a disk dump: %q, want no warning", w)
	}
}
