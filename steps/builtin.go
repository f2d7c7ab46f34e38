package steps

import "github.com/hashicorp/hcl/v2/hcldec"

// Builtin is the table of step kinds mig ships, by kind label.
func Builtin() map[string]Kind {
	return map[string]Kind{
		"exec":      Exec{},
		"predump":   PreDump{},
		"dump":      Dump{},
		"archive":   Archive{},
		"copy":      Copy{},
		"unarchive": Unarchive{},
		"restore":   Restore{},
		"verify":    Verify{},
		"move_ip":   MoveIP{},
	}
}

// WorkloadKind is a family of workload blocks, such as `process "web" {}`.
// The engine decodes a block with Spec and exposes it to expressions as
// `<family>.<name>`: the decoded body plus `name` and `kind`.
type WorkloadKind interface {
	Spec() hcldec.Spec
}

// Workloads is the table of workload families, by block type.
func Workloads() map[string]WorkloadKind {
	return map[string]WorkloadKind{
		"process":   ProcessWorkload{},
		"container": ContainerWorkload{},
	}
}
