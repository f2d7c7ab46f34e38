package host

import (
	"context"
	"testing"
	"time"
)

func TestClockOffsetLocal(t *testing.T) {
	h := NewLocal("a", Table(Builtin()), testLog(t))
	off, err := ClockOffset(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if off.RTT <= 0 || off.RTT > time.Second || off.Offset.Abs() > off.RTT {
		t.Errorf("offset %s, rtt %s: want the same clock within the round trip", off.Offset, off.RTT)
	}
}
