package engine

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// Kind is one kind of step: `step "<kind>" "<name>" { … }`. The engine
// defines it and takes the table of kinds from its caller (Config.Kinds);
// it knows no kind by name.
type Kind interface {
	// Spec decodes the step's own arguments (the engine removes the
	// meta-arguments first).
	Spec() hcldec.Spec
	// Outputs is the type of what other steps may reference.
	Outputs() cty.Type
	// Host names the host the step runs on, "" when none or not known
	// yet. cfg may hold unknown values. Plans, events and the run record
	// show it.
	Host(cfg cty.Value) string
	// Plan says what Apply would do, without changing anything. cfg may
	// hold unknown values. It may inspect hosts read-only.
	Plan(ctx context.Context, cfg cty.Value, env StepEnv) (Preview, hcl.Diagnostics)
	// Apply does the work. cfg is fully known.
	Apply(ctx context.Context, cfg cty.Value, env StepEnv) (Result, error)
}

// PlanChecker is a kind that also checks the plan as a whole, for
// problems between steps (such as an order that would break
// connections). The engine calls it once per plan.
type PlanChecker interface {
	CheckPlan(steps []Planned) hcl.Diagnostics
}

// Planned is what a PlanChecker knows of a planned step.
type Planned struct {
	Name  string // step name, without "step."
	Kind  string
	Cfg   cty.Value              // its arguments; parts may be unknown
	After func(step string) bool // whether it runs after step (a name), directly or not
	Range hcl.Range
}

// WorkloadKind is a family of workload blocks, such as `process "web" {}`.
// The engine decodes a block with Spec and exposes it to expressions as
// `<family>.<name>`: the decoded body plus `name` and `kind`.
type WorkloadKind interface {
	Spec() hcldec.Spec
}

// Preview is a kind's description of planned work.
type Preview struct {
	Notes []string // findings worth showing, such as missing features
}

// Result is what a successful Apply returns.
type Result struct {
	Outputs cty.Value
	// Undo, when set, puts back what the step changed. The engine runs it
	// if the run fails or is cancelled after this step completed.
	Undo func(ctx context.Context) error
	// Commit, when set, finishes the step once the whole run succeeded.
	Commit func(ctx context.Context) error
	// Alive, when set, says whether what the step started still runs (a
	// restored copy). When a run fails after the target served clients,
	// the engine keeps the workload there only if every Alive says so.
	Alive func(ctx context.Context) (bool, error)
	// Replay is the serializable form of Undo and Commit: agent actions on
	// named hosts that the run record and the hosts' hold leases keep, so
	// that `mig recover` and a host's hold watcher can redo them without
	// this process. Each action must be idempotent. Set it whenever Undo or
	// Commit is set.
	Replay Replay
	// Metrics are figures for the run record (durations, bytes, CRIU stats).
	// Names ending in _time or _seconds are seconds, in _bytes bytes.
	// moved_bytes counts what the step sent from one host to another.
	Metrics map[string]float64
}

// Replay lists a step's undo and commit as agent actions.
type Replay struct {
	Undo   []host.Invocation `json:"undo,omitempty"`
	Commit []host.Invocation `json:"commit,omitempty"`
	// Decide, for a host's watcher only, tells undo from commit by what
	// the host sees (see host.LeaseEntry).
	Decide []host.Invocation `json:"decide,omitempty"`
}

// StepEnv is what the engine gives a step.
type StepEnv struct {
	Log     hclog.Logger
	Hosts   func(name string) (host.Host, error)
	Attempt int
	// StepDir is a local directory for this step's files in the run record
	// (such as CRIU's logs). It is created on first use.
	StepDir string
	// Progress reports transfer progress to the user's view.
	Progress func(host.Progress)
	// Deadline is the attempt's timeout, zero when none.
	Deadline time.Time
	// Hold makes a host responsible for this step's changes should mig
	// die: it opens the run's lease on the host (starting its watcher) and
	// returns what an agent action needs to add to it. A step that freezes
	// or starts a workload calls it before it does, and passes the HoldRef
	// in its request, so the agent records the undo before it returns. nil
	// outside apply.
	Hold func(ctx context.Context, hostName string) (*host.HoldRef, error)
	// Switch says that the target now serves clients (its restore
	// returned, with the service address on it): resuming the source
	// would lose what the target wrote. From here, should mig die or the
	// run be cancelled, the run rolls forward and keeps the target. With
	// final (post-copy, where the source can no longer take back), a
	// failing step rolls forward too. nil outside apply.
	Switch func(ctx context.Context, final bool) error
	// Steps is the whole run as planned (upstream outputs unknown), and
	// Self this step's entry in it, for checks that count on what other
	// steps will have done (such as the files a copy brings).
	Steps []Planned
	Self  *Planned
}
