// Package criu checkpoints and restores workloads with CRIU on one host. It
// finds CRIU, talks to it through go-criu's RPC, explains its failures from
// its log and decodes its statistics. One Driver per workload family (a
// plain process here, a runc container in steps/container) does the
// family-specific parts; Actions exposes all of it as agent actions, so the
// step kinds reach local and remote hosts the same way.
package criu

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/hashicorp/go-hclog"

	"github.com/mig-project/mig/engine/host"
)

// Workload names what to checkpoint, as it travels in action requests.
type Workload struct {
	Kind string `json:"kind"` // workload family: "process", "container"
	Name string `json:"name"` // the block's label
	// Config is the block's decoded arguments as a JSON object (without
	// its host). Each driver reads its own fields from it.
	Config json.RawMessage `json:"config,omitempty"`
}

// Options are the CRIU switches every workload block may set.
type Options struct {
	TCPEstablished bool `json:"tcp_established"`
	ShellJob       bool `json:"shell_job"`
	FileLocks      bool `json:"file_locks"`
	// NewConnections is NewHold, NewDrop, NewReset or "" (hold where the
	// host can queue packets, else drop).
	NewConnections string `json:"new_connections"`
}

// Options reads the common CRIU switches from the workload's config.
func (w Workload) Options() (Options, error) {
	var o Options
	if len(w.Config) == 0 {
		return o, nil
	}
	if err := json.Unmarshal(w.Config, &o); err != nil {
		return o, fmt.Errorf("%s %q: %w", w.Kind, w.Name, err)
	}
	return o, nil
}

func (w Workload) String() string { return fmt.Sprintf("%s %q", w.Kind, w.Name) }

// Env is what a driver gets besides the request: the CRIU to use and a
// logger.
type Env struct {
	CRIU Binary
	Log  hclog.Logger
}

// Driver checkpoints and restores one family of workloads on the host it
// runs on. Every method runs inside an agent action, so requests and
// results are plain JSON-able values. A driver rejects bad input in
// Resolve, before anything is frozen.
type Driver interface {
	// Resolve finds the workload on this host and checks that it can be
	// checkpointed (it exists, is not a kernel thread nor mig itself, a
	// terminal needs shell_job, …).
	Resolve(ctx context.Context, env Env, w Workload) (Resolved, error)
	// PreDump writes one pre-copy round into req.Dir, leaving the
	// workload running.
	PreDump(ctx context.Context, env Env, w Workload, req DumpRequest) (DumpResult, error)
	// Dump writes the final checkpoint and leaves the workload frozen
	// (held) so that it can still be resumed. With req.Lazy the pages stay
	// with the source and are served until the target has them all; the
	// result's Held.LazyPID is then the process serving them.
	Dump(ctx context.Context, env Env, w Workload, req DumpRequest) (DumpResult, error)
	// Resume undoes Dump: the held workload runs again and its network
	// is unlocked.
	Resume(ctx context.Context, env Env, w Workload, held Held) error
	// Kill commits Dump: the held workload is killed and its network lock
	// removed.
	Kill(ctx context.Context, env Env, w Workload, held Held) error
	// Restore starts the workload from the images in req.Dir, detached
	// from the caller.
	Restore(ctx context.Context, env Env, w Workload, req RestoreRequest) (RestoreResult, error)
	// KillRestored undoes Restore.
	KillRestored(ctx context.Context, env Env, w Workload, res RestoreResult) error
	// CheckTarget lists why this host could not take the workload (for
	// example a listening port already taken); empty when it can.
	CheckTarget(ctx context.Context, env Env, w Workload, req CheckRequest) ([]string, error)
}

// Drivers is the table of drivers by workload family.
type Drivers map[string]Driver

// Resolved is what a workload is on its host right now.
type Resolved struct {
	PID         int    `json:"pid"`                    // root of the tree CRIU dumps
	ID          string `json:"id,omitempty"`           // container id, when a container
	Description string `json:"description"`            // for plan output: "pid 123 (counter -listen :8080)"
	Terminal    bool   `json:"terminal,omitempty"`     // has a controlling terminal
	Listens     []int  `json:"listen_ports,omitempty"` // TCP ports it listens on
	UDP         []int  `json:"udp_ports,omitempty"`    // UDP ports its unconnected sockets have
	Tasks       int    `json:"tasks,omitempty"`        // processes in the tree
	// Problems are what would fail the dump after the freeze, each with
	// its fix; a step refuses to freeze a workload that has any.
	Problems []string `json:"problems,omitempty"`
	// Warnings are what may go wrong after the move, which the operator
	// should know first (a supervisor that would start the service again).
	Warnings []string `json:"warnings,omitempty"`
	// Needs are the paths the restore needs on the target.
	Needs Needs `json:"needs,omitempty"`
	// PIDs are the tree's process and thread ids, which a restore in the
	// target host's PID namespace takes back.
	PIDs []int `json:"pids,omitempty"`
	// Conns are the tree's established TCP connections (IPv4), whose
	// local addresses the target must have by the restore.
	Conns []Conn `json:"conns,omitempty"`
	// Bound are the tree's TCP listeners bound to one address (not a
	// wildcard, not loopback), which the target must have by the restore.
	Bound []netip.AddrPort `json:"bound,omitempty"`
}

// DumpRequest asks for a pre-dump round or the final dump.
type DumpRequest struct {
	Dir string `json:"dir"` // images dir, created 0700
	// Parent is the previous round's dir, relative to Dir ("../1").
	Parent string `json:"parent,omitempty"`
	// PageServer, when set, sends pages to a running `criu page-server`.
	PageServer *Addr `json:"page_server,omitempty"`
	// Lazy keeps the pages with the source and serves them from Listen.
	Lazy   bool  `json:"lazy,omitempty"`
	Listen *Addr `json:"listen,omitempty"`
	// Resolved is the workload as resolved before, when known, so that
	// the driver dumps exactly what was checked.
	Resolved *Resolved `json:"resolved,omitempty"`
	// Hold, when set, is the run's lease on this host: the final dump
	// records how to resume and kill the held workload there before it
	// returns, so that the host resumes it should mig die.
	Hold *host.HoldRef `json:"hold,omitempty"`
	// Written, when set, is called once CRIU has written the images and
	// before the driver reads what it reports of the held workload, so
	// that the images can leave while it does.
	Written func() `json:"-"`
}

// Addr is a TCP address.
type Addr struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

func (a Addr) String() string { return fmt.Sprintf("%s:%d", a.Host, a.Port) }

// DumpResult is what a dump or pre-dump round produced.
type DumpResult struct {
	Dir     string             `json:"dir"`
	LogPath string             `json:"log_path"`
	Stats   map[string]float64 `json:"stats,omitempty"` // see DumpStats
	Held    Held               `json:"held"`
	Seconds float64            `json:"seconds"`
	// Listen is where a lazy dump serves its pages (the port is chosen
	// when the request's was 0).
	Listen *Addr `json:"listen,omitempty"`
	// CRIU says which CRIU did it and why (set by the action, not the driver).
	CRIU string `json:"criu,omitempty"`
	// Ports and Conns are what the workload listened on and had
	// established when frozen: the target guards them until the restore.
	Ports []int  `json:"ports,omitempty"`
	Conns []Conn `json:"conns,omitempty"`
	// Times is when it ran here (set by the action).
	Times Times `json:"times"`
	// Frozen is when the driver froze the tasks, or locked their
	// connections, itself before CRIU froze them (unix nanoseconds); 0
	// when CRIU's freeze began the pause.
	Frozen int64 `json:"frozen,omitempty"`
	// Sent is what the dump sent to DumpAction.Send, or SendError why it
	// could not (set by the action).
	Sent      *host.TransferResult `json:"sent,omitempty"`
	SendError string               `json:"send_error,omitempty"`
}

// Held is the state of a frozen source that Resume and Kill need.
type Held struct {
	PID  int   `json:"pid"`
	PIDs []int `json:"pids,omitempty"` // every task of the tree
	// Starts are the PIDs' start times (clock ticks after boot), so that
	// a late undo or commit never signals a process that reused a PID.
	Starts   []uint64 `json:"starts,omitempty"`
	ID       string   `json:"id,omitempty"`        // container id
	NftTable string   `json:"nft_table,omitempty"` // the connections' lock: "inet mig-lock-PID", or CRIU's "inet CRIU-932449b8-…"
	// HoldTable is the guard that holds, drops or refuses new connections
	// while held (see HoldPorts).
	HoldTable string `json:"hold_table,omitempty"`
	LazyPID   int    `json:"lazy_pid,omitempty"`  // process serving lazy pages
	LazyPort  int    `json:"lazy_port,omitempty"` // its port, guarded (psguard.go)
	Dir       string `json:"dir,omitempty"`
}

// HoldLock is the key under which a run's lease locks a held workload.
func HoldLock(held Held) string {
	if held.ID != "" {
		return "container:" + held.ID
	}
	return "process:" + strconv.Itoa(held.PID)
}

// RestoreRequest asks for a restore from Dir.
type RestoreRequest struct {
	Dir string `json:"dir"`
	// Lazy restores with a lazy-pages daemon that fetches the pages from
	// the source's page server at Source.
	Lazy   bool  `json:"lazy,omitempty"`
	Source *Addr `json:"source,omitempty"`
	// Wait for a page server that wrote into Dir to finish first.
	PageServerPID int `json:"page_server_pid,omitempty"`
	// LeaveStopped keeps the restored tasks stopped until ActContinue
	// starts them: once every host knows the target serves (and, with
	// prefetch, every page has arrived).
	LeaveStopped bool `json:"leave_stopped,omitempty"`
	// Hold, when set, is the run's lease on this host: the restore records
	// how to kill the restored copy before it returns.
	Hold *host.HoldRef `json:"hold,omitempty"`
}

// RestoreResult is the restored workload.
type RestoreResult struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start,omitempty"` // PID's start time, as in Held.Starts
	// Stopped: the tree was restored stopped (RestoreRequest.LeaveStopped,
	// where the driver can) and waits for criu.continue.
	Stopped bool               `json:"stopped,omitempty"`
	ID      string             `json:"id,omitempty"`
	LogPath string             `json:"log_path"`
	Stats   map[string]float64 `json:"stats,omitempty"` // see RestoreStats
	LazyPID int                `json:"lazy_pid,omitempty"`
	Seconds float64            `json:"seconds"`
	CRIU    string             `json:"criu,omitempty"` // as in DumpResult
	Times   Times              `json:"times"`          // as in DumpResult
	// Tasks are the restored tree's processes (where the driver can tell).
	Tasks []Task `json:"tasks,omitempty"`
}

// CheckRequest asks whether this host can take a workload.
type CheckRequest struct {
	Ports []int `json:"ports,omitempty"` // must be free here
	Lazy  bool  `json:"lazy,omitempty"`  // post-copy will be used
	Needs Needs `json:"needs,omitempty"` // must exist here
	PIDs  []int `json:"pids,omitempty"`  // must be free here
}
