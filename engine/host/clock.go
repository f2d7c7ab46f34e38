package host

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"time"
)

// Clock is the "clock" action: for each byte it reads, it writes the
// host's wall clock (unix nanoseconds, 8 bytes big-endian), so that
// timestamps taken there can be placed on the caller's time line. The
// exchanges run over one open call: the round trips are short and about
// symmetric, unlike a call's own start.
func Clock(ctx context.Context, c *Call) (any, error) {
	var b [1]byte
	var out [8]byte
	for {
		if _, err := io.ReadFull(c.In, b[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, err
		}
		binary.BigEndian.PutUint64(out[:], uint64(time.Now().UnixNano()))
		if _, err := c.Out.Write(out[:]); err != nil {
			return nil, err
		}
	}
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

// clockRounds is how many round trips ClockOffset makes.
const clockRounds = 8

// ClockOffset measures h's clock offset over a few round trips and keeps
// the one with the shortest round trip, the least uncertain.
func ClockOffset(ctx context.Context, h Host) (Offset, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := h.Call(ctx, "clock", struct{}{}, nil, CallOpts{In: inR, Out: outW})
		// A call that ended without reading (a context over, a host
		// gone) must not leave the rounds' writes waiting.
		inR.CloseWithError(errors.Join(err, io.ErrClosedPipe))
		outW.CloseWithError(errors.Join(err, io.ErrUnexpectedEOF))
		done <- err
	}()
	best := Offset{RTT: -1}
	var err error
	for range clockRounds {
		t0 := time.Now()
		if _, err = inW.Write([]byte{0}); err != nil {
			break
		}
		var b [8]byte
		if _, err = io.ReadFull(outR, b[:]); err != nil {
			break
		}
		rtt := time.Since(t0)
		if best.RTT >= 0 && rtt >= best.RTT {
			continue
		}
		remote := time.Unix(0, int64(binary.BigEndian.Uint64(b[:])))
		best = Offset{Offset: remote.Sub(t0.Add(rtt / 2)), RTT: rtt}
	}
	inW.Close()
	if cerr := <-done; cerr != nil {
		return Offset{}, cerr
	}
	if best.RTT < 0 {
		return Offset{}, err
	}
	return best, nil
}
