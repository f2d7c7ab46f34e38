package steps

import "github.com/mig-project/mig/engine"

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

// WorkloadKind is the engine's contract of a workload family.
type WorkloadKind = engine.WorkloadKind

// Workloads is the table of workload families, by block type.
func Workloads() map[string]WorkloadKind {
	return map[string]WorkloadKind{
		"process":   ProcessWorkload{},
		"container": ContainerWorkload{},
	}
}
