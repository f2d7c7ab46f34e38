package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine/host"
)

// DefaultHoldTimeout is how long a host waits for mig to renew a run's
// lease before it undoes the run's changes itself.
const DefaultHoldTimeout = 30 * time.Second

// holdSet is a run's leases on its hosts (see engine/host/hold.go): it
// opens one on a host when a step first changes something there that must
// be undone should mig die, renews them while the run goes on, switches them
// to roll forward at the point of no return, and releases them at the end.
type holdSet struct {
	run     string
	timeout time.Duration
	get     func(string) (host.Host, error)
	log     hclog.Logger
	changed func() // the set of leased hosts changed: write the record

	mu    sync.Mutex
	hosts []string        // in the order the leases were opened
	none  map[string]bool // hosts without hold actions
	mode  string
	stop  chan struct{}
	done  chan struct{}
}

func newHoldSet(run string, timeout time.Duration, get func(string) (host.Host, error), log hclog.Logger, changed func()) *holdSet {
	return &holdSet{run: run, timeout: timeout, get: get, log: log, changed: changed, mode: host.ModeUndo,
		none: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
}

func (s *holdSet) has(name string) bool {
	for _, h := range s.hosts {
		if h == name {
			return true
		}
	}
	return false
}

// errNoHold: the host's mig offers no hold actions (a test's action
// table); the run goes on without a lease there.
var errNoHold = errors.New("this host cannot hold leases")

// open makes sure the run holds a lease on host name.
func (s *holdSet) open(ctx context.Context, name string) error {
	s.mu.Lock()
	if s.has(name) {
		s.mu.Unlock()
		return nil
	}
	err := s.openLocked(ctx, name)
	s.mu.Unlock()
	if err == nil {
		s.changed()
	}
	return err
}

func (s *holdSet) openLocked(ctx context.Context, name string) error {
	if s.none[name] {
		return errNoHold
	}
	h, err := s.get(name)
	if err != nil {
		return err
	}
	// Not cut short by a cancel: a lease opened on the host but unknown
	// here would never be released.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err = host.ActHoldOpen.Call(ctx, h, host.HoldRequest{Run: s.run, Timeout: s.timeout.Seconds()}, nil, host.CallOpts{})
	if err != nil && strings.Contains(err.Error(), fmt.Sprintf("unknown action %q", host.ActHoldOpen.Name)) {
		s.log.Warn("this host's mig cannot hold the run should mig die", "host", name)
		s.none[name] = true
		return errNoHold
	}
	// Released at the end even when the open failed: it may have
	// happened all the same.
	if len(s.hosts) == 0 {
		go s.renew()
	}
	s.hosts = append(s.hosts, name)
	if err != nil {
		return err
	}
	if s.mode != host.ModeUndo {
		return host.ActHoldMode.Call(ctx, h, host.HoldRequest{Run: s.run, Mode: s.mode}, nil, host.CallOpts{})
	}
	return nil
}

// ref opens the lease on a host for a step, for Env.Hold. It returns nil
// for a host that cannot hold leases.
func (s *holdSet) ref(step string) func(context.Context, string) (*host.HoldRef, error) {
	return func(ctx context.Context, name string) (*host.HoldRef, error) {
		err := s.open(ctx, name)
		if errors.Is(err, errNoHold) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &host.HoldRef{Run: s.run, Step: step, Host: name}, nil
	}
}

// add records a completed step's undo and commit on each host they run on.
func (s *holdSet) add(ctx context.Context, step string, rp Replay) error {
	byHost := map[string]*host.LeaseEntry{}
	var order []string
	entry := func(h string) *host.LeaseEntry {
		if byHost[h] == nil {
			byHost[h] = &host.LeaseEntry{Step: step}
			order = append(order, h)
		}
		return byHost[h]
	}
	for _, inv := range rp.Undo {
		e := entry(inv.Host)
		e.Undo = append(e.Undo, inv)
	}
	for _, inv := range rp.Commit {
		e := entry(inv.Host)
		e.Commit = append(e.Commit, inv)
	}
	for _, inv := range rp.Decide {
		e := entry(inv.Host)
		e.Decide = append(e.Decide, inv)
	}
	// The hosts at once: a step may be waiting for this with the source
	// frozen.
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, name := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.open(ctx, name); errors.Is(err, errNoHold) {
				return
			} else if err != nil {
				errs[i] = fmt.Errorf("host %s: %w", name, err)
				return
			}
			h, err := s.get(name)
			if err == nil {
				err = host.ActHoldAdd.Call(ctx, h, host.HoldRequest{Run: s.run, Entry: byHost[name]}, nil, host.CallOpts{})
			}
			if err != nil {
				errs[i] = fmt.Errorf("host %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setMode tells every host what to do should the lease expire from now
// on. The hosts opened last (the targets) hear it first: a mig that dies
// in between leaves the target rolling forward and the source rolling
// back, two running copies rather than none. With together, they hear it
// at once: for post-copy, where both copies' hosts decide from whether
// the last page arrived, whatever their mode says.
func (s *holdSet) setMode(ctx context.Context, mode string, together bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = mode
	errs := make([]error, len(s.hosts))
	set := func(i int) {
		h, err := s.get(s.hosts[i])
		if err == nil {
			err = host.ActHoldMode.Call(ctx, h, host.HoldRequest{Run: s.run, Mode: mode}, nil, host.CallOpts{})
		}
		if err != nil {
			errs[i] = fmt.Errorf("host %s: %w", s.hosts[i], err)
		}
	}
	var wg sync.WaitGroup
	for i := len(s.hosts) - 1; i >= 0; i-- {
		if together {
			wg.Go(func() { set(i) })
		} else {
			set(i)
		}
	}
	wg.Wait()
	for i := len(errs) - 1; i >= 0; i-- {
		if errs[i] != nil {
			return errs[i]
		}
	}
	return nil
}

// renew renews every lease a few times per timeout until release. A host
// that cannot be reached is retried at the next tick; if it stays away
// longer than the timeout, it acts on its own.
func (s *holdSet) renew() {
	defer close(s.done)
	every := max(s.timeout/4, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		hosts := append([]string(nil), s.hosts...)
		s.mu.Unlock()
		for _, name := range hosts {
			h, err := s.get(name)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), every)
				err = host.ActHoldRenew.Call(ctx, h, host.HoldRequest{Run: s.run}, nil, host.CallOpts{})
				cancel()
			}
			if err != nil {
				s.log.Warn("cannot renew the hold lease", "host", name, "error", err)
			}
		}
	}
}

// release ends every lease; the watchers exit without acting.
func (s *holdSet) release(ctx context.Context, note string) []error {
	s.mu.Lock()
	hosts := append([]string(nil), s.hosts...)
	s.mu.Unlock()
	if len(hosts) > 0 {
		close(s.stop)
		<-s.done
	}
	var errs []error
	for _, name := range hosts {
		h, err := s.get(name)
		if err == nil {
			err = host.ActHoldRelease.Call(ctx, h, host.HoldRequest{Run: s.run, Note: note}, nil, host.CallOpts{})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("release the hold on %s: %w", name, err))
		}
	}
	return errs
}

// covers says whether every host that rp names holds a lease: those
// hosts, not the run's record, answer for rp should mig die.
func (s *holdSet) covers(rp Replay) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range [][]host.Invocation{rp.Undo, rp.Commit, rp.Decide} {
		for _, inv := range l {
			if !s.has(inv.Host) {
				return false
			}
		}
	}
	return true
}

// leased returns the hosts holding a lease.
func (s *holdSet) leased() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hosts...)
}
