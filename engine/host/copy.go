package host

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// CopyResult is what Copy reports.
type CopyResult struct {
	Bytes   int64   // payload bytes (a directory travels as tar)
	SHA256  string  // of the payload, checked at the destination
	Seconds float64 // wall time
	// Placed says what the copy displaced at the destination (aside.go).
	Placed Placed
}

// Copy streams srcPath on src (a file or a directory) to dstPath on dst.
// The bytes are relayed through this process over a pipe, so they never
// land on its disk and memory stays bounded. The destination checks the
// sha256 the source computed, and only renames the copy into place when it
// matches. progress, which may be nil, gets reports with rate and ETA.
func Copy(ctx context.Context, src Host, srcPath string, dst Host, dstPath string, progress func(Progress)) (CopyResult, error) {
	return CopyWith(ctx, src, srcPath, dst, dstPath, CopyOptions{Progress: progress})
}

// CopyOptions are the optional parts of a copy.
type CopyOptions struct {
	Progress func(Progress)
	// Direct, when set, is the destination's host name or IP as the source
	// reaches it: the source then sends straight to the destination over
	// TLS (see direct.go) instead of through mig.
	Direct string
	// Merge adds a directory's files to an existing destination directory
	// instead of replacing it (see RecvRequest.Merge).
	Merge bool
	// KeepAside keeps what the destination held aside (RecvRequest.KeepAside).
	KeepAside bool
	// NoSync skips the destination's fsyncs (RecvRequest.NoSync).
	NoSync bool
	// Delta sends, of a directory's files that the destination holds,
	// only the blocks that differ (delta.go).
	Delta bool
	// Torn copies files that change while being read, as a seed for a
	// later delta copy (SendRequest.Torn).
	Torn bool
}

// CopyWith is Copy with options.
func CopyWith(ctx context.Context, src Host, srcPath string, dst Host, dstPath string, opts CopyOptions) (CopyResult, error) {
	if opts.Direct != "" {
		return copyDirect(ctx, src, srcPath, dst, dstPath, opts)
	}
	progress := opts.Progress
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()

	var (
		once  sync.Once
		first error
	)
	record := func(err error) {
		once.Do(func() { first = err })
	}

	basis, mine, err := deltaSums(ctx, src, srcPath, dst, dstPath, opts)
	if err != nil {
		return CopyResult{}, err
	}
	pr, pw := io.Pipe()
	var sent TransferResult
	srcDone := make(chan error, 1)
	go func() {
		err := ActSend.Call(ctx, src, SendRequest{Path: srcPath, Basis: basis, Sums: mine, Torn: opts.Torn}, &sent, CallOpts{Out: pw})
		if err != nil {
			record(err)
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		srcDone <- err
	}()

	var got TransferResult
	err = ActRecv.Call(ctx, dst, RecvRequest{Path: dstPath, Merge: opts.Merge, KeepAside: opts.KeepAside, NoSync: opts.NoSync, Delta: opts.Delta}, &got, CallOpts{In: pr, Progress: withRate(start, progress)})
	if err != nil {
		record(err)
		pr.CloseWithError(err)
		cancel()
	}
	serr := <-srcDone
	if err != nil || serr != nil {
		return CopyResult{}, first
	}
	return checkCopy(src, srcPath, dst, dstPath, sent, got, start)
}

// copyDirect has the destination listen and the source connect to it.
func copyDirect(ctx context.Context, src Host, srcPath string, dst Host, dstPath string, opts CopyOptions) (CopyResult, error) {
	start := time.Now()
	// The receiver admits only the address the source reaches it from.
	var route RouteResult
	if err := ActRoute.Call(ctx, src, RouteRequest{To: opts.Direct}, &route, CallOpts{}); err != nil {
		return CopyResult{}, err
	}
	basis, mine, err := deltaSums(ctx, src, srcPath, dst, dstPath, opts)
	if err != nil {
		return CopyResult{}, err
	}
	rc, err := Receive(ctx, dst, dstPath, opts.Direct, []string{route.IP}, opts)
	if err != nil {
		return CopyResult{}, err
	}
	var sent TransferResult
	req := SendRequest{Path: srcPath, Connect: rc.Ticket.Connect, Fingerprint: rc.Ticket.Fingerprint, Token: rc.Ticket.Token, Basis: basis, Sums: mine, Torn: opts.Torn}
	if err := ActSend.Call(ctx, src, req, &sent, CallOpts{}); err != nil {
		// A receiver that refused (no room, a bad stream) broke the
		// sender's connection: its error says why.
		if rerr := rc.stop(time.Second); rerr != nil && ctx.Err() == nil {
			return CopyResult{}, rerr
		}
		return CopyResult{}, err
	}
	got, err := rc.Wait()
	if err != nil {
		return CopyResult{}, err
	}
	return checkCopy(src, srcPath, dst, dstPath, sent, got, start)
}

// deltaSums hashes, for a delta copy, what dst holds at dstPath (basis)
// and what src holds at srcPath (mine), both at once; nil for another.
func deltaSums(ctx context.Context, src Host, srcPath string, dst Host, dstPath string, opts CopyOptions) (basis, mine BlockSums, err error) {
	if !opts.Delta {
		return nil, nil, nil
	}
	var serr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		serr = ActBlockSums.Call(ctx, src, PathRequest{Path: srcPath}, &mine, CallOpts{})
	}()
	err = ActBlockSums.Call(ctx, dst, PathRequest{Path: dstPath}, &basis, CallOpts{})
	<-done
	if err != nil {
		return nil, nil, fmt.Errorf("what the destination holds: %w", err)
	}
	if serr != nil {
		return nil, nil, serr
	}
	return basis, mine, nil
}

// Ticket is what a direct receiver announces: where its source connects,
// and how each knows the other (direct.go).
type Ticket struct {
	Connect     string `json:"connect"`
	Fingerprint string `json:"fingerprint"`
	Token       string `json:"token"`
}

// Receiver is a direct fs.recv listening for its source.
type Receiver struct {
	Ticket Ticket
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	got    TransferResult
	err    error
}

// Receive starts a direct fs.recv of dstPath on dst, listening at addr
// (where the source reaches dst) for a connection from one of from. It
// returns once the receiver listens, with the ticket its source needs.
func Receive(ctx context.Context, dst Host, dstPath, addr string, from []string, opts CopyOptions) (*Receiver, error) {
	ctx, cancel := context.WithCancel(ctx)
	rc := &Receiver{cancel: cancel, done: make(chan error, 1)}
	tr, tw := io.Pipe()
	go func() {
		req := RecvRequest{Path: dstPath, Listen: net.JoinHostPort(addr, "0"), From: from, Merge: opts.Merge, KeepAside: opts.KeepAside, NoSync: opts.NoSync, Delta: opts.Delta}
		err := ActRecv.Call(ctx, dst, req, &rc.got, CallOpts{Out: tw, Progress: withRate(time.Now(), opts.Progress)})
		tw.CloseWithError(err)
		rc.done <- err
	}()
	br := bufio.NewReader(tr)
	t, err := readTicket(br)
	if err != nil {
		cancel()
		if derr := <-rc.done; derr != nil {
			return nil, derr
		}
		return nil, &ActionError{Host: dst.Name(), Action: ActRecv.Name, Err: err}
	}
	go io.Copy(io.Discard, br)
	rc.Ticket = Ticket{Connect: net.JoinHostPort(addr, t.Port), Fingerprint: t.Fingerprint, Token: t.Token}
	return rc, nil
}

// Wait waits until the receiver has the whole transfer, checked and in
// place, or has failed.
func (r *Receiver) Wait() (TransferResult, error) {
	r.once.Do(func() {
		r.err = <-r.done
		r.cancel()
	})
	return r.got, r.err
}

// Cancel stops the receiver, which removes what it got.
func (r *Receiver) Cancel() {
	r.cancel()
	r.Wait()
}

// stop gives the receiver up to d to end on its own, then cancels it. It
// returns the receiver's error only if the receiver ended by itself.
func (r *Receiver) stop(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-r.done:
		r.once.Do(func() {
			r.err = err
			r.cancel()
		})
		return err
	case <-t.C:
		r.Cancel()
		return nil
	}
}

// DialReceiver connects to a direct receiver, ahead of what it will be
// sent (SendOver).
func DialReceiver(ctx context.Context, t Ticket) (*tls.Conn, error) {
	return dialDirect(ctx, t.Connect, ticket{Fingerprint: t.Fingerprint, Token: t.Token})
}

func checkCopy(src Host, srcPath string, dst Host, dstPath string, sent, got TransferResult, start time.Time) (CopyResult, error) {
	if got.SHA256 != sent.SHA256 || got.Bytes != sent.Bytes {
		return CopyResult{}, fmt.Errorf("copy %s:%s to %s:%s: the source sent %d bytes with sha256 %s, the destination got %d bytes with sha256 %s",
			src.Name(), srcPath, dst.Name(), dstPath, sent.Bytes, sent.SHA256, got.Bytes, got.SHA256)
	}
	res := CopyResult{Bytes: got.Bytes, SHA256: got.SHA256, Seconds: time.Since(start).Seconds()}
	res.Placed = Placed{Path: dstPath}
	if got.Placed != nil {
		res.Placed = *got.Placed
	}
	return res, nil
}

// withRate adds the rate and ETA to progress reports.
func withRate(start time.Time, progress func(Progress)) func(Progress) {
	if progress == nil {
		return nil
	}
	return func(p Progress) {
		if s := time.Since(start).Seconds(); s > 0 {
			p.Rate = float64(p.Done) / s
		}
		if p.Rate > 0 && p.Total > p.Done {
			p.ETA = float64(p.Total-p.Done) / p.Rate
		}
		progress(p)
	}
}
