package engine

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// Hosts are a workflow's hosts, evaluated as plan and apply evaluate them
// (variables, locals, functions), for commands that talk to the hosts
// without running steps (`mig doctor`).
type Hosts struct {
	names []string
	pool  *hostPool
}

// Hosts evaluates the workflow's host blocks with vars.
func (w *Workflow) Hosts(vars map[string]cty.Value) (*Hosts, hcl.Diagnostics) {
	sv, diags := w.evaluate(w.markVars(vars))
	if diags.HasErrors() {
		return nil, w.cfg.Redact.Diags(diags)
	}
	return &Hosts{names: append([]string(nil), w.hostOrder...), pool: newHostPool(w, sv)}, w.cfg.Redact.Diags(diags)
}

// Names lists the hosts in the order they are declared.
func (h *Hosts) Names() []string { return append([]string(nil), h.names...) }

// Setting returns a string setting of a host's body (such as "criu"), or
// "" when it is not set or not known.
func (h *Hosts) Setting(name, attr string) string {
	cfg, _ := h.pool.sv.hosts[name].UnmarkDeep()
	if cfg.IsNull() || !cfg.IsKnown() || !cfg.Type().IsObjectType() || !cfg.Type().HasAttribute(attr) {
		return ""
	}
	v := cfg.GetAttr(attr)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// Open connects to a host; it stays open until Close.
func (h *Hosts) Open(name string) (host.Host, error) { return h.pool.get(name) }

// Close closes the hosts opened.
func (h *Hosts) Close() { h.pool.closeAll() }
