package host

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
)

// Family decodes `host "name" { … }` blocks and opens the hosts they
// declare. A body with a transport's block (`ssh { … }`) is a host reached
// through that transport; a body without one is the local machine.
type Family struct {
	Actions Actions
	Log     hclog.Logger
	// Transports are the transports a host block may name, by block type;
	// nil: Transports().
	Transports map[string]Transport
}

// Transport is a way to reach a host. Adding one is a file with its type
// and a line in Transports.
type Transport interface {
	// Spec is the schema of the transport's block.
	Spec() hcldec.Spec
	// Address is the address other hosts reach the host at, from the
	// block, without a port; "" when the block does not tell.
	Address(block cty.Value) string
	// Open connects to the host. block is the transport's block, fully
	// known.
	Open(ctx context.Context, name string, block cty.Value, opts OpenOptions) (Host, error)
}

// OpenOptions are a host's settings that every transport gets.
type OpenOptions struct {
	WorkDir string // where mig keeps its binary and images; "": the default
	Log     hclog.Logger
}

// Transports are the transports mig knows, by block type.
func Transports() map[string]Transport {
	return map[string]Transport{
		"ssh": sshTransport{},
	}
}

func (f Family) transports() map[string]Transport {
	if f.Transports == nil {
		return Transports()
	}
	return f.Transports
}

// Spec is the schema of a host block's body.
func (f Family) Spec() hcldec.Spec {
	spec := hcldec.ObjectSpec{
		// CRIU binary to use on this host; see steps/criu for the search order.
		"criu": &hcldec.AttrSpec{Name: "criu", Type: cty.String},
		// Where mig keeps its binary and images on this host.
		"work_dir": &hcldec.AttrSpec{Name: "work_dir", Type: cty.String},
	}
	for name, t := range f.transports() {
		spec[name] = &hcldec.BlockSpec{TypeName: name, Nested: t.Spec()}
	}
	return spec
}

// Value is what `host.<name>` evaluates to in expressions: the decoded
// body plus the host's name and its address (null for the local machine).
func (f Family) Value(name string, cfg cty.Value) cty.Value {
	attrs := map[string]cty.Value{"name": cty.StringVal(name), "address": cty.NullVal(cty.String)}
	if cfg.IsKnown() && !cfg.IsNull() {
		for k, v := range cfg.AsValueMap() {
			attrs[k] = v
		}
	}
	if tname, t := f.transport(cfg); t != nil {
		// A sensitive address stays sensitive.
		block, marks := attr(cfg, tname).UnmarkDeep()
		switch a := t.Address(block); {
		case !block.IsWhollyKnown():
			attrs["address"] = cty.UnknownVal(cty.String).WithMarks(marks)
		case a != "":
			attrs["address"] = cty.StringVal(a).WithMarks(marks)
		}
	} else if !cfg.IsWhollyKnown() {
		attrs["address"] = cty.UnknownVal(cty.String)
	}
	return cty.ObjectVal(attrs)
}

// transport returns the transport whose block cfg sets, if any (the first
// by name if several are).
func (f Family) transport(cfg cty.Value) (string, Transport) {
	names := f.set(cfg)
	if len(names) == 0 {
		return "", nil
	}
	return names[0], f.transports()[names[0]]
}

// set lists the transports whose blocks cfg sets, by name.
func (f Family) set(cfg cty.Value) []string {
	var names []string
	for name := range f.transports() {
		if b := attr(cfg, name); !b.IsNull() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Open connects to the host. cfg is the decoded body, fully known.
func (f Family) Open(name string, cfg cty.Value) (Host, error) {
	log := f.Log.Named("host").With("host", name)
	names := f.set(cfg)
	switch len(names) {
	case 0:
		return NewLocal(name, f.Actions, log), nil
	case 1:
	default:
		return nil, fmt.Errorf("host %q: one transport block at most, not %s", name, strings.Join(names, " and "))
	}
	t := f.transports()[names[0]]
	return t.Open(context.Background(), name, attr(cfg, names[0]), OpenOptions{WorkDir: str(cfg, "work_dir"), Log: log})
}

// sshTransport is an OpenSSH host: `ssh { address = "10.0.0.2:22" … }`.
type sshTransport struct{}

func (sshTransport) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"address":         &hcldec.AttrSpec{Name: "address", Type: cty.String, Required: true},
		"user":            &hcldec.AttrSpec{Name: "user", Type: cty.String},
		"identity_file":   &hcldec.AttrSpec{Name: "identity_file", Type: cty.String},
		"known_hosts":     &hcldec.AttrSpec{Name: "known_hosts", Type: cty.String},
		"connect_timeout": args.DurationSpec("connect_timeout"),
	}
}

func (sshTransport) Address(block cty.Value) string {
	a := str(block, "address")
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}

// Open checks the host's key against known_hosts while connecting.
func (sshTransport) Open(ctx context.Context, name string, block cty.Value, opts OpenOptions) (Host, error) {
	sc := SSHConfig{
		Address:      str(block, "address"),
		User:         str(block, "user"),
		IdentityFile: str(block, "identity_file"),
		KnownHosts:   str(block, "known_hosts"),
		WorkDir:      opts.WorkDir,
	}
	if t := str(block, "connect_timeout"); t != "" {
		d, err := args.ParseDuration(t)
		if err != nil {
			return nil, fmt.Errorf("host %q: connect_timeout: %w", name, err)
		}
		sc.ConnectTimeout = d
	}
	return DialSSH(ctx, name, sc, opts.Log)
}

func attr(obj cty.Value, name string) cty.Value {
	if obj.IsNull() || !obj.IsKnown() || !obj.Type().IsObjectType() || !obj.Type().HasAttribute(name) {
		return cty.NullVal(cty.DynamicPseudoType)
	}
	return obj.GetAttr(name)
}

func str(obj cty.Value, name string) string {
	v := attr(obj, name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}
