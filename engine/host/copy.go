package host

import (
	"bufio"
	"context"
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

	pr, pw := io.Pipe()
	var sent TransferResult
	srcDone := make(chan error, 1)
	go func() {
		err := ActSend.Call(ctx, src, SendRequest{Path: srcPath}, &sent, CallOpts{Out: pw})
		if err != nil {
			record(err)
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		srcDone <- err
	}()

	var got TransferResult
	err := ActRecv.Call(ctx, dst, RecvRequest{Path: dstPath, Merge: opts.Merge, KeepAside: opts.KeepAside, NoSync: opts.NoSync}, &got, CallOpts{In: pr, Progress: withRate(start, progress)})
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	// The receiver admits only the address the source reaches it from.
	var route RouteResult
	if err := ActRoute.Call(ctx, src, RouteRequest{To: opts.Direct}, &route, CallOpts{}); err != nil {
		return CopyResult{}, err
	}
	tr, tw := io.Pipe()
	var got TransferResult
	dstDone := make(chan error, 1)
	go func() {
		req := RecvRequest{Path: dstPath, Listen: net.JoinHostPort(opts.Direct, "0"), From: []string{route.IP}, Merge: opts.Merge, KeepAside: opts.KeepAside, NoSync: opts.NoSync}
		err := ActRecv.Call(ctx, dst, req, &got, CallOpts{Out: tw, Progress: withRate(start, opts.Progress)})
		tw.CloseWithError(err)
		dstDone <- err
	}()
	br := bufio.NewReader(tr)
	t, err := readTicket(br)
	if err != nil {
		cancel()
		if derr := <-dstDone; derr != nil {
			return CopyResult{}, derr
		}
		return CopyResult{}, &ActionError{Host: dst.Name(), Action: ActRecv.Name, Err: err}
	}
	go io.Copy(io.Discard, br)
	var sent TransferResult
	req := SendRequest{Path: srcPath, Connect: net.JoinHostPort(opts.Direct, t.Port), Fingerprint: t.Fingerprint, Token: t.Token}
	serr := ActSend.Call(ctx, src, req, &sent, CallOpts{})
	if serr != nil {
		cancel()
		<-dstDone
		return CopyResult{}, serr
	}
	if err := <-dstDone; err != nil {
		return CopyResult{}, err
	}
	return checkCopy(src, srcPath, dst, dstPath, sent, got, start)
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
