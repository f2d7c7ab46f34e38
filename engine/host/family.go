package host

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/args"
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
			"connect_timeout": args.DurationSpec("connect_timeout"),
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

// Open connects to the host. cfg is the decoded body, fully known. An SSH
// host's key is checked against known_hosts while connecting.
func (f Family) Open(name string, cfg cty.Value) (Host, error) {
	log := f.Log.Named("host").With("host", name)
	ssh := attr(cfg, "ssh")
	if ssh.IsNull() {
		return NewLocal(name, f.Actions, log), nil
	}
	sc := SSHConfig{
		Address:      str(ssh, "address"),
		User:         str(ssh, "user"),
		IdentityFile: str(ssh, "identity_file"),
		KnownHosts:   str(ssh, "known_hosts"),
		WorkDir:      str(cfg, "work_dir"),
	}
	if t := str(ssh, "connect_timeout"); t != "" {
		d, err := args.ParseDuration(t)
		if err != nil {
			return nil, fmt.Errorf("host %q: connect_timeout: %w", name, err)
		}
		sc.ConnectTimeout = d
	}
	return DialSSH(context.Background(), name, sc, log)
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
