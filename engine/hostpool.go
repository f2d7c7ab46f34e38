package engine

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/hcl/v2"

	"github.com/mig-project/mig/engine/host"
)

// hostPool opens each host once, when a step first asks for it.
type hostPool struct {
	w    *Workflow
	sv   *scopeVals
	mu   sync.Mutex
	open map[string]host.Host
	// failed, while a plan runs, keeps the hosts that could not be
	// opened: each is dialled once, and the plan reports it. A run
	// dials again every time.
	failed map[string]error
}

func newHostPool(w *Workflow, sv *scopeVals) *hostPool {
	return &hostPool{w: w, sv: sv, open: map[string]host.Host{}}
}

func (p *hostPool) get(name string) (host.Host, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.open[name]; ok {
		return h, nil
	}
	cfg, ok := p.sv.hosts[name]
	if !ok || p.w.cfg.Hosts == nil {
		return nil, fmt.Errorf("no host %q in the workflow%s", name, suggest(name, slices.Sorted(maps.Keys(p.sv.hosts))))
	}
	cfg, _ = cfg.UnmarkDeep()
	if !cfg.IsWhollyKnown() {
		return nil, fmt.Errorf("host %q: its settings are not known yet", name)
	}
	if err := p.failed[name]; err != nil {
		return nil, err
	}
	h, err := p.w.cfg.Hosts.Open(name, cfg)
	if err != nil {
		err = fmt.Errorf("open host %s: %w", name, err)
		if p.failed != nil {
			p.failed[name] = err
		}
		return nil, err
	}
	p.open[name] = h
	return h, nil
}

func (p *hostPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(p.open)) {
		if err := p.open[name].Close(); err != nil {
			p.w.log().Named("engine").Warn("closing host", "host", name, "error", err)
		}
	}
	p.open = map[string]host.Host{}
}

// planning starts keeping the hosts that fail to open; done stops it and
// returns an error diagnostic for each: plan could not check what the
// steps need there, and a run would fail on it.
func (p *hostPool) planning() (done func() hcl.Diagnostics) {
	p.mu.Lock()
	p.failed = map[string]error{}
	p.mu.Unlock()
	return func() hcl.Diagnostics {
		p.mu.Lock()
		defer p.mu.Unlock()
		var diags hcl.Diagnostics
		for _, name := range slices.Sorted(maps.Keys(p.failed)) {
			d := &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot connect to host " + name,
				Detail:   p.failed[name].Error() + ". Nothing that the steps need on it could be checked, and a run would fail there.",
			}
			if decl := p.w.hosts[name]; decl != nil {
				d.Subject = decl.DeclRange.Ptr()
			}
			diags = append(diags, d)
		}
		p.failed = nil
		return diags
	}
}
