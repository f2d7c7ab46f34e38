package steps

import (
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// ContainerWorkload is the `container "name" {}` workload family: a runc
// container driven through libcontainer (steps/container).
//
//	container "web" {
//	  host            = host.h1
//	  id              = "counter"
//	  bundle          = "/srv/bundles/counter" # must exist on the target too
//	  root            = "/run/runc"            # runc's state root (the default)
//	  restore_id      = "counter-2"            # ID on the target, default id
//	  tcp_established = false
//	  new_connections = "hold"                 # or "drop", "reset"
//	}
type ContainerWorkload struct{}

// Spec decodes a container block.
func (ContainerWorkload) Spec() hcldec.Spec {
	return hcldec.ObjectSpec{
		"host":            &hcldec.AttrSpec{Name: "host", Type: HostRef, Required: true},
		"id":              &hcldec.AttrSpec{Name: "id", Type: cty.String, Required: true},
		"bundle":          &hcldec.AttrSpec{Name: "bundle", Type: cty.String},
		"root":            &hcldec.AttrSpec{Name: "root", Type: cty.String},
		"restore_id":      &hcldec.AttrSpec{Name: "restore_id", Type: cty.String},
		"tcp_established": &hcldec.AttrSpec{Name: "tcp_established", Type: cty.Bool},
		"file_locks":      &hcldec.AttrSpec{Name: "file_locks", Type: cty.Bool},
		"new_connections": newConnectionsSpec,
	}
}
