// Package workflows holds the example workflows, which `mig bench` runs;
// their end-to-end tests are in this directory too.
package workflows

import "embed"

// FS holds the example workflows and the hand-run baselines.
//
//go:embed *.hcl testdata/handrun.hcl testdata/runc-handrun.hcl
var FS embed.FS
