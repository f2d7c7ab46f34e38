package engine

import (
	"time"

	"github.com/mig-project/mig/engine/host"
)

// State is how a step instance, an undo or a commit ended.
type State string

const (
	StateOK        State = "ok"
	StateFailed    State = "failed"
	StateSkipped   State = "skipped" // a step failed before it could start
	StateCancelled State = "cancelled"
	StateRunning   State = "running" // in undo and commit events, before the action ends
)

// EventType names what happened.
type EventType string

const (
	EventStarted  EventType = "started"  // an attempt started
	EventRetrying EventType = "retrying" // an attempt failed and another follows after Delay
	EventFinished EventType = "finished" // a step instance reached its final state
	EventProgress EventType = "progress" // a transfer report from a step
	EventUndo     EventType = "undo"     // compensation of a completed step
	EventCommit   EventType = "commit"   // a step's commit after the run succeeded
)

// Event is one thing that happened during apply. Views render them.
type Event struct {
	Type     EventType          `json:"type"`
	Time     time.Time          `json:"time"`
	Step     string             `json:"step"`
	Kind     string             `json:"kind,omitempty"`
	Host     string             `json:"host,omitempty"`
	Attempt  int                `json:"attempt,omitempty"`
	State    State              `json:"state,omitempty"`
	Error    string             `json:"error,omitempty"`
	Delay    float64            `json:"delay_seconds,omitempty"` // before the next attempt
	Seconds  float64            `json:"seconds,omitempty"`       // how long the step, undo or commit took
	Progress *host.Progress     `json:"progress,omitempty"`      // for progress events
	Metrics  map[string]float64 `json:"metrics,omitempty"`       // for finished events
}
