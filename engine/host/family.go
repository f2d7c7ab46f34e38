package host

import (
	"errors"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// Family decodes `host "name" { … }` blocks and opens the hosts they
// declare. A body with an `ssh { … }` block is an OpenSSH host; any other is
// the local machine.
type Family struct {
	Actions Actions
	Log     hclog.Logger
}

// Spec is the schema of a host block's body.
func (Family) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		// CRIU binary to use on this host; see steps/criu for the search order.
		"criu": &hcldec.AttrSpec{Name: "criu", Type: cty.String},
		// Where mig keeps its binary and images on this host.
		"work_dir": &hcldec.AttrSpec{Name: "work_dir", Type: cty.String},
		"ssh": &hcldec.BlockSpec{TypeName: "ssh", Nested: hcldec.ObjectSpec{
			"address":         &hcldec.AttrSpec{Name: "address", Type: cty.String, Required: true},
			"user":            &hcldec.AttrSpec{Name: "user", Type: cty.String},
			"identity_file":   &hcldec.AttrSpec{Name: "identity_file", Type: cty.String},
			"known_hosts":     &hcldec.AttrSpec{Name: "known_hosts", Type: cty.String},
			"connect_timeout": &hcldec.AttrSpec{Name: "connect_timeout", Type: cty.String},
		}},
	}
}

// Value is what `host.<name>` evaluates to in expressions: the decoded
// body plus the host's name.
func (Family) Value(name string, cfg cty.Value) cty.Value {
	attrs := map[string]cty.Value{"name": cty.StringVal(name)}
	if cfg.IsKnown() && !cfg.IsNull() {
		for k, v := range cfg.AsValueMap() {
			attrs[k] = v
		}
	}
	return cty.ObjectVal(attrs)
}

// Open connects to the host. cfg is the decoded body, fully known.
func (f Family) Open(name string, cfg cty.Value) (Host, error) {
	if ssh := cfg.GetAttr("ssh"); !ssh.IsNull() {
		return nil, errors.New("ssh hosts are not implemented yet")
	}
	return NewLocal(name, f.Actions, f.Log.Named("host").With("host", name)), nil
}
