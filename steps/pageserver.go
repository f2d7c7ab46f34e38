package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/mig-project/mig/engine/host"
	"github.com/mig-project/mig/steps/criu"
)

// pageServer is a CRIU page server on a dump's target host, for one dump
// (or pre-dump round): it admits only the source's address, writes the
// pages it receives into its images, and exits after the last one.
type pageServer struct {
	h    host.Host
	addr criu.Addr
	pid  int
}

// pageServerStopLimit bounds stopping a page server: the kill, the wait
// for it to go and the removal of its port's guard.
const pageServerStopLimit = 15 * time.Second

// startPageServer starts a page server on tgt listening at req.Listen.Host
// (on a free port), for the dump src sends; req.From is set here.
func startPageServer(ctx context.Context, src, tgt host.Host, req criu.PageServerAction) (*pageServer, error) {
	from, err := sourceAddress(ctx, src, req.Listen.Host)
	if err != nil {
		return nil, err
	}
	req.From = from
	var res criu.PageServerResult
	if err := tgt.Call(ctx, criu.ActPageServer, req, &res, host.CallOpts{}); err != nil {
		return nil, fmt.Errorf("page server on %s: %w", tgt.Name(), err)
	}
	return &pageServer{h: tgt, addr: criu.Addr{Host: req.Listen.Host, Port: res.Port}, pid: res.PID}, nil
}

// wait waits until the page server has written the last page and exited,
// and removes the guard of its port; it stops the page server when that
// fails.
func (p *pageServer) wait(ctx context.Context) error {
	if err := p.h.Call(ctx, criu.ActWait, criu.WaitAction{PID: p.pid, Timeout: 60, Port: p.addr.Port}, nil, host.CallOpts{}); err != nil {
		p.stop(ctx)
		return fmt.Errorf("page server on %s: %w", p.h.Name(), err)
	}
	return nil
}

// stop kills the page server and removes the guard of its port, if there
// is one (p may be nil). It runs on when ctx is cancelled, since a cancel
// is what it cleans up after, for at most pageServerStopLimit.
func (p *pageServer) stop(ctx context.Context) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pageServerStopLimit)
	defer cancel()
	killPID(ctx, p.h, p.pid)
	p.h.Call(ctx, criu.ActWait, criu.WaitAction{PID: p.pid, Timeout: 5, Port: p.addr.Port}, nil, host.CallOpts{})
}
