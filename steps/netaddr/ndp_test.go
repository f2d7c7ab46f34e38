package netaddr

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

// TestAdvertisement: an unsolicited neighbour advertisement as RFC 4861
// lays it out: type 136, code 0, the override flag alone (not a router, not
// solicited), the target, and the target's link-layer address option.
func TestAdvertisement(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	target := netip.MustParseAddr("fd00:77::100")
	b := advertisement(mac, target)
	want := append([]byte{136, 0, 0, 0, 0x20, 0, 0, 0}, target.AsSlice()...)
	want = append(want, 2, 1)
	want = append(want, mac...)
	if !bytes.Equal(b, want) {
		t.Errorf("advertisement:\n got % x\nwant % x", b, want)
	}
	if len(b)%8 != 0 {
		t.Errorf("%d bytes: options end on 8-byte units", len(b))
	}
}
