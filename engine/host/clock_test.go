package host

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestClockOffsetLocal(t *testing.T) {
	h := NewLocal("a", Builtin(), testLog(t))
	off, err := ClockOffset(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if off.RTT <= 0 || off.RTT > time.Second || off.Offset.Abs() > off.RTT {
		t.Errorf("offset %s, rtt %s: want the same clock within the round trip", off.Offset, off.RTT)
	}
}

// gone is a host whose calls fail at once, reading nothing.
type gone struct{}

func (gone) Name() string { return "gone" }
func (gone) Call(context.Context, string, any, any, CallOpts) error {
	return errors.New("host gone")
}
func (gone) Close() error { return nil }

// A call that ends without reading (its context over, its host gone) must
// not leave the rounds waiting on a pipe nobody reads.
func TestClockOffsetGone(t *testing.T) {
	done := make(chan error, 1)
	go func() { _, err := ClockOffset(context.Background(), gone{}); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a failed measurement succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ClockOffset hangs when its call ends without reading")
	}
}
