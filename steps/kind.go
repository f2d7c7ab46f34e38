// Package steps holds the built-in step kinds. The contract they implement
// is the engine's (engine/kind.go); cmd/mig hands Builtin to the engine.
package steps

import (
	"github.com/zclconf/go-cty/cty"

	"github.com/mig-project/mig/engine"
)

// The engine's step-kind contract, under the names the kinds use.
type (
	Kind    = engine.Kind
	Env     = engine.StepEnv
	Preview = engine.Preview
	Result  = engine.Result
	Replay  = engine.Replay
	Planned = engine.Planned
)

// pageSize is the size of the memory pages CRIU counts.
const pageSize = 4096

// hostArg is Kind.Host for the kinds that run where their host argument
// says.
func hostArg(cfg cty.Value) string { return HostName(Attr(cfg, "host")) }
