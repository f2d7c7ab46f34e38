package steps

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// CheckPlan checks the plan as a whole for the move_ip steps (CheckMoves).
func (MoveIP) CheckPlan(steps []Planned) hcl.Diagnostics { return CheckMoves(steps) }

// CheckMoves finds the move_ip steps that put the service address on a
// host before a restore there while nothing guards that host. Between the
// two, the host's kernel has no sockets for the moved connections and would
// answer their packets with resets. A dump with target set to that host
// guards it from before the freeze until the restore ends.
func CheckMoves(steps []Planned) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, m := range steps {
		if m.Kind != "move_ip" {
			continue
		}
		to := HostName(Attr(m.Cfg, "to"))
		if to == "" {
			continue
		}
		for _, r := range steps {
			if r.Kind != "restore" || !r.After(m.Name) || HostName(Attr(r.Cfg, "host")) != to {
				continue
			}
			w, err := workloadOf(Attr(r.Cfg, "workload"))
			if err != nil {
				continue
			}
			if detail := guardProblem(steps, m, r, w, to); detail != "" {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagWarning,
					Summary:  "Service address moves to an unguarded host",
					Detail:   detail,
					Subject:  m.Range.Ptr(),
				})
			}
		}
	}
	return diags
}

// guardProblem says why nothing guards host to between move m and restore
// r of workload w, or "" when a dump does.
func guardProblem(steps []Planned, m, r Planned, w workload, to string) string {
	var dumps []Planned
	for _, d := range steps {
		if d.Kind != "dump" || !m.After(d.Name) {
			continue
		}
		dw, err := workloadOf(Attr(d.Cfg, "workload"))
		if err != nil || dw.Kind != w.Kind || dw.Name != w.Name {
			continue
		}
		t := Attr(d.Cfg, "target")
		if !t.IsKnown() || HostName(t) == to {
			return ""
		}
		dumps = append(dumps, d)
	}
	if len(dumps) == 0 {
		return fmt.Sprintf("step.%s moves the service address to host %s before step.%s restores %s.%s there, and no dump of %s.%s runs before it: its connections would break while it still runs on the source. Make step.%s depend on the final dump.",
			m.Name, to, r.Name, w.Kind, w.Name, w.Kind, w.Name, m.Name)
	}
	return fmt.Sprintf("step.%s moves the service address to host %s before step.%s restores %s.%s there, and nothing guards %s in between: its kernel would answer the moved connections with resets, and new ones would be refused. Set target = host.%s on step.%s: the dump then guards %s from before the freeze until the restore ends.",
		m.Name, to, r.Name, w.Kind, w.Name, to, to, dumps[len(dumps)-1].Name, to)
}
