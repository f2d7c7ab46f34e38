// Package engine loads HCL workflows, builds their step graph, plans them
// and applies them with retries, timeouts and compensation.
//
// The engine defines the step-kind contract (Kind, in kind.go) and takes
// the table of kinds and workload families from its caller (Config); it
// knows no kind by name.
//
// # Language
//
// A workflow is a .hcl file or a directory of them. Its blocks:
//
//	variable "pid" { type = number  default = 1  description = "…"  sensitive = false }
//	locals { dir = "/srv/${var.name}" }         # may use var.* and local.*
//	host "src" { ssh { address = "10.0.0.1:22" } }   # schema from Config.Hosts
//	process "web" { host = host.src  pid = var.pid } # one block type per Config.Workloads entry
//	probe "web" { http = "http://10.0.0.9/"  interval = "5ms"  timeout = "1s" }
//	step "<kind>" "<name>" {
//	  # the engine's meta-arguments:
//	  depends_on = [step.other]
//	  timeout    = "30s"            # per attempt
//	  retry { attempts = 3  delay = "1s"  backoff = 2  max_delay = "30s" }
//	  for_each   = var.targets      # map or set of strings; each.key, each.value
//	  # everything else is decoded by the kind's Spec
//	}
//
// Expressions may use var.x, local.x, host.x (the host family's Value),
// <family>.x for workloads (the decoded body plus name and kind),
// step.x.<output> (step.x["key"] for for_each steps), and cty's standard
// functions plus toset. timeout and retry may use only var and local.
// References to steps are the graph's edges.
//
// # Phases
//
// Load decodes the blocks, takes the meta-arguments out with
// PartialContent, checks each kind's arguments and every reference, and
// sorts the steps, reporting cycles as paths. Vars resolves variables.
// Validate and Plan evaluate every step in order with upstream outputs
// unknown; Plan also asks each kind's Plan. Apply plans first, then walks
// the graph, evaluating each step's body just before it runs with the real
// upstream outputs.
//
// # Runs
//
// Apply runs up to Parallelism step instances at once. Each attempt gets
// its own timeout; failed attempts are retried after an exponential
// backoff with jitter. Every instance ends ok, failed, skipped (a step
// failed before it could start: once one failed, no step starts) or
// cancelled. After a failure or cancellation the undo
// actions of completed steps run in reverse completion order; after
// success their commit actions run in completion order. Probes sample
// their URL for the whole run. The run's Record, with a debug log
// (run.log), is kept in <state dir>/runs/<run id>/.
package engine
