package engine

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/mig-project/mig/engine/host"
)

// hostPool opens each host once, when a step first asks for it.
type hostPool struct {
	w    *Workflow
	sv   *scopeVals
	mu   sync.Mutex
	open map[string]host.Host
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
	h, err := p.w.cfg.Hosts.Open(name, cfg)
	if err != nil {
		return nil, fmt.Errorf("open host %s: %w", name, err)
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
