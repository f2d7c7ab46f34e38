package engine

import (
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine/host"
)

// HostFamily decodes `host "name" {}` blocks and opens hosts. host.Family
// implements it.
type HostFamily interface {
	Spec() hcldec.Spec
	Value(name string, cfg cty.Value) cty.Value
	Open(name string, cfg cty.Value) (host.Host, error)
}

// Config is what the engine needs from its caller: the tables of kinds and
// the host family. Tests pass fake kinds here.
type Config struct {
	Kinds     map[string]Kind
	Workloads map[string]WorkloadKind
	Hosts     HostFamily
	Log       hclog.Logger
	// Redact learns the run's sensitive values; give the same one the
	// writers of the output and logs. Load makes one when nil.
	Redact *Redactor
}

// Workflow is a loaded workflow: its declarations and its step graph.
type Workflow struct {
	// Path is the file or directory the workflow was loaded from.
	Path string

	cfg    Config
	parser *hclparse.Parser
	names  []string // file names, in load order

	vars      map[string]*Variable
	locals    map[string]*Local
	localList []*Local // in the order of the source
	hosts     map[string]*HostDecl
	workloads map[string]map[string]*Workload // by family, then name
	steps     map[string]*Step
	probes    map[string]*ProbeDecl
	loads     map[string]*ProbeDecl // load blocks, declared as probes are

	varOrder, hostOrder, probeOrder []string
	loadOrder                       []string
	order                           []string            // steps in dependency order
	sorted                          map[string][]string // declared names by reference root, for checkRefs

	holdTimeout   time.Duration // settings.hold_timeout; DefaultHoldTimeout when zero
	settingsRange *hcl.Range
	// rollbackAfterServing is settings.rollback_after_serving: a step that
	// fails after the target served rolls back even while the target's
	// copy runs, losing what clients wrote there.
	rollbackAfterServing bool
}

// HoldTimeout is how long hosts hold the run's changes without hearing
// from mig (settings { hold_timeout }).
func (w *Workflow) HoldTimeout() time.Duration {
	if w.holdTimeout > 0 {
		return w.holdTimeout
	}
	return DefaultHoldTimeout
}

// Variable is a `variable "name" {}` block.
type Variable struct {
	Name        string
	Type        cty.Type
	Default     cty.Value // cty.NilVal when required
	Description string
	Sensitive   bool
	DeclRange   hcl.Range
}

// Local is one attribute of a `locals {}` block.
type Local struct {
	Name      string
	Expr      hcl.Expression
	DeclRange hcl.Range

	index int   // in localList
	refs  []int // the locals it refers to, by index, set by checkRefs
}

// HostDecl is a `host "name" {}` block.
type HostDecl struct {
	Name      string
	Body      hcl.Body
	DeclRange hcl.Range
}

// Workload is a workload block such as `process "web" {}`.
type Workload struct {
	Family    string
	Name      string
	Body      hcl.Body
	DeclRange hcl.Range
}

// ProbeDecl is a `probe "name" {}` block.
type ProbeDecl struct {
	Name      string
	Body      hcl.Body
	DeclRange hcl.Range
}

// Step is a `step "<kind>" "<name>" {}` block, with its meta-arguments
// taken out of the body.
type Step struct {
	Name      string
	Kind      string
	DeclRange hcl.Range

	kind      Kind
	body      hcl.Body // what is left for the kind's spec
	timeout   hcl.Expression
	forEach   hcl.Expression
	retry     *hcl.Block
	dependsOn []hcl.Traversal // explicit depends_on: step.<name>, each with its range
	deps      []string        // all upstream steps, sorted
	seq       int             // declaration order
}

// Files returns the parsed files by name, for hcl.NewDiagnosticTextWriter.
// It includes variable files read by Vars.
func (w *Workflow) Files() map[string]*hcl.File { return w.parser.Files() }

// FileNames returns the workflow's files in load order.
func (w *Workflow) FileNames() []string { return append([]string(nil), w.names...) }

// Steps returns the step names in dependency order.
func (w *Workflow) Steps() []string { return append([]string(nil), w.order...) }

// Step returns a step by name, nil when there is none.
func (w *Workflow) Step(name string) *Step { return w.steps[name] }

// Deps returns the names of the steps s depends on.
func (s *Step) Deps() []string { return append([]string(nil), s.deps...) }

// Variables returns the declared variables in declaration order.
func (w *Workflow) Variables() []*Variable {
	out := make([]*Variable, 0, len(w.varOrder))
	for _, n := range w.varOrder {
		out = append(out, w.vars[n])
	}
	return out
}

// Redactor returns the redactor that learns the workflow's sensitive
// values as they are resolved.
func (w *Workflow) Redactor() *Redactor { return w.cfg.Redact }

func (w *Workflow) log() hclog.Logger {
	if w.cfg.Log == nil {
		return hclog.NewNullLogger()
	}
	return w.cfg.Log
}
