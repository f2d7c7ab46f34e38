package host

import (
	"context"
	"time"
)

// ClockResult is the "clock" action's answer: the host's wall clock.
type ClockResult struct {
	UnixNano int64 `json:"unix_nano"`
}

// Clock is the "clock" action: it reads the host's wall clock, so that
// timestamps taken there can be placed on the caller's time line.
func Clock(ctx context.Context, c *Call) (any, error) {
	return ClockResult{UnixNano: time.Now().UnixNano()}, nil
}

// Offset is how far a host's clock is ahead of the caller's, measured
// NTP-style over the agent connection: the remote reading is taken as
// being half way through the round trip, so the error is at most RTT/2.
type Offset struct {
	Offset time.Duration
	RTT    time.Duration
}

// ToLocal converts a time read on the host to the caller's clock.
func (o Offset) ToLocal(t time.Time) time.Time { return t.Add(-o.Offset) }

// ClockOffset measures h's clock offset over a few round trips and keeps
// the one with the shortest round trip, the least uncertain.
func ClockOffset(ctx context.Context, h Host) (Offset, error) {
	best := Offset{RTT: -1}
	for range 4 {
		t0 := time.Now()
		var r ClockResult
		if err := h.Call(ctx, "clock", struct{}{}, &r, CallOpts{}); err != nil {
			return Offset{}, err
		}
		rtt := time.Since(t0)
		if best.RTT >= 0 && rtt >= best.RTT {
			continue
		}
		mid := t0.Add(rtt / 2)
		best = Offset{Offset: time.Unix(0, r.UnixNano).Sub(mid), RTT: rtt}
	}
	return best, nil
}
