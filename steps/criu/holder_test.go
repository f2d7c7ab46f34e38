package criu

import (
	"net/netip"
	"testing"
)

func TestPacketDst(t *testing.T) {
	v4 := make([]byte, 20)
	v4[0] = 0x45
	copy(v4[16:], []byte{10, 77, 0, 100})
	v6 := make([]byte, 40)
	v6[0] = 0x60
	dst := netip.MustParseAddr("fd00:77::100")
	a := dst.As16()
	copy(v6[24:], a[:])
	for _, tc := range []struct {
		pkt  []byte
		want netip.Addr
		ok   bool
	}{
		{v4, netip.MustParseAddr("10.77.0.100"), true},
		{v6, dst, true},
		{v4[:19], netip.Addr{}, false},
		{v6[:39], netip.Addr{}, false},
		{[]byte{0x50, 0, 0, 0}, netip.Addr{}, false},
	} {
		got, ok := packetDst(tc.pkt)
		if got != tc.want || ok != tc.ok {
			t.Errorf("packetDst(% x…) = %v, %v; want %v, %v", tc.pkt[:1], got, ok, tc.want, tc.ok)
		}
	}
}
