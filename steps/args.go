package steps

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Argument types with checks of their own, for the kinds' args structs
// (see engine/args). Each check runs in the spec, so its diagnostic points
// at the argument.

// workloadArg is a `workload = process.web` argument.
type workloadArg struct{ cty.Value }

func (workloadArg) ArgType() cty.Type { return cty.DynamicPseudoType }

func (workloadArg) Check(v cty.Value) hcl.Diagnostics {
	if !v.Type().IsObjectType() || String(v, "kind", "") == "" || String(v, "name", "") == "" {
		return hcl.Diagnostics{errDiag("Invalid workload", errNotWorkload.Error())}
	}
	return nil
}

// lazySourceArg is a lazy restore's `source = step.<dump>.lazy`.
type lazySourceArg struct{ cty.Value }

func (lazySourceArg) ArgType() cty.Type { return LazySource }

// argv is a command line: the program and its arguments.
type argv []string

func (argv) Check(v cty.Value) hcl.Diagnostics {
	if v.LengthInt() == 0 {
		return hcl.Diagnostics{errDiag("Empty argv", "argv needs at least the program to run.")}
	}
	return nil
}

// hostPort is an address such as "10.77.0.12:8080".
type hostPort string

func (hostPort) Check(v cty.Value) hcl.Diagnostics {
	if _, _, err := net.SplitHostPort(v.AsString()); err != nil {
		return hcl.Diagnostics{errDiag("Invalid address", fmt.Sprintf("%q: want host:port.", v.AsString()))}
	}
	return nil
}

// httpURL is an http or https URL.
type httpURL string

func (httpURL) Check(v cty.Value) hcl.Diagnostics {
	if pu, err := url.Parse(v.AsString()); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return hcl.Diagnostics{errDiag("Invalid URL", fmt.Sprintf("%q is not an http or https URL.", v.AsString()))}
	}
	return nil
}

// pattern is a regular expression (Go's RE2 syntax).
type pattern string

func (pattern) Check(v cty.Value) hcl.Diagnostics {
	if _, err := regexp.Compile(v.AsString()); err != nil {
		return hcl.Diagnostics{errDiag("Invalid body_regex", err.Error())}
	}
	return nil
}

// ipPrefix is an address with its prefix length, such as 10.77.0.100/24
// or fd00:77::100/64.
type ipPrefix string

func (ipPrefix) Check(v cty.Value) hcl.Diagnostics {
	s := v.AsString()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return hcl.Diagnostics{errDiag("Invalid address", fmt.Sprintf("%q: want an address with its prefix length, such as 10.77.0.100/24 or fd00:77::100/64.", s))}
	}
	a := p.Addr()
	why := ""
	switch {
	case a.Is4In6():
		why = "write an IPv4 address as IPv4"
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
		why = "not an address a service can move with"
	case a.IsLinkLocalUnicast():
		why = "a link-local address belongs to its link, not to a service"
	}
	if why != "" {
		return hcl.Diagnostics{errDiag("Unsupported address", fmt.Sprintf("%s: %s.", s, why))}
	}
	return nil
}

// hostRef is an argument that names a host: `host = host.src` (the host's
// value) or its name.
type hostRef struct{ cty.Value }

func (hostRef) ArgType() cty.Type { return HostRef }

func (hostRef) Check(v cty.Value) hcl.Diagnostics {
	if ty := v.Type(); ty == cty.String || (ty.IsObjectType() && ty.HasAttribute("name")) {
		return nil
	}
	return hcl.Diagnostics{errDiag("Not a host", "want a host, such as host.src.")}
}

// Name is the host's name, "" when unknown or null.
func (h hostRef) Name() string { return HostName(h.Value) }
