package engine

import (
	"sort"
	"time"
)

// Pause is the critical path of a move's pause: when each thing the
// clients waited for happened, on the orchestrator's clock (the hosts'
// readings are corrected for their clock offset by the steps).
type Pause struct {
	// Marks are in time order; At is seconds from the run's start.
	Marks []Mark `json:"marks"`
	// Window is from the freeze to the restored tasks running, the pause
	// as the workload lived it (0 when the run has no such pair).
	Window float64 `json:"window_seconds"`
}

// Mark is one point on the critical path.
type Mark struct {
	Name string  `json:"name"` // "freeze start", "dump end", …
	At   float64 `json:"t"`
	Step string  `json:"step,omitempty"` // the step or probe it comes from
}

// Mark names, in the order they usually come.
const (
	MarkFreeze    = "freeze start"
	MarkDumped    = "dump end"
	MarkPages     = "pages on target"
	MarkImages    = "images on target"
	MarkFiles     = "files on target" // a copy after a dump that sent the images itself
	MarkAddress   = "address moved"
	MarkRestored  = "restore end"
	MarkStarted   = "running on target" // a copy restored stopped, once the hosts know it serves
	MarkFirstGood = "first good answer"
)

// Pause derives the critical path from the steps' metrics and the
// probes' samples; nil when no step froze anything.
func (r *Record) Pause() *Pause {
	at := func(unix float64) float64 {
		return time.Unix(0, int64(unix*1e9)).Sub(r.Started).Seconds()
	}
	var dump, restore *StepRecord
	for _, s := range r.Steps {
		switch {
		case s.Kind == "dump" && s.Metrics["freeze_unix"] > 0:
			dump = s
		case s.Kind == "restore" && s.Metrics["restored_unix"] > 0:
			restore = s
		}
	}
	if dump == nil {
		return nil
	}
	p := &Pause{}
	add := func(name string, t float64, step string) {
		p.Marks = append(p.Marks, Mark{Name: name, At: t, Step: step})
	}
	freeze := at(dump.Metrics["freeze_unix"])
	add(MarkFreeze, freeze, dump.Address)
	add(MarkDumped, at(dump.Metrics["dumped_unix"]), dump.Address)
	if t := dump.Metrics["pages_on_target_unix"]; t > 0 {
		add(MarkPages, at(t), dump.Address)
	}
	// The last copy into place, and the address move, after the freeze.
	var images, address *StepRecord
	for _, s := range r.Steps {
		if s.State != StateOK || s.Started.Before(dump.Started) {
			continue
		}
		switch s.Kind {
		case "copy", "unarchive":
			if images == nil || s.Ended.After(images.Ended) {
				images = s
			}
		case "move_ip":
			if address == nil || s.Ended.After(address.Ended) {
				address = s
			}
		}
	}
	if t := dump.Metrics["images_on_target_unix"]; t > 0 {
		add(MarkImages, at(t), dump.Address) // the dump sent them itself
		if images != nil {
			add(MarkFiles, images.Ended.Sub(r.Started).Seconds(), images.Address)
		}
	} else if images != nil {
		add(MarkImages, images.Ended.Sub(r.Started).Seconds(), images.Address)
	}
	if address != nil {
		add(MarkAddress, address.Ended.Sub(r.Started).Seconds(), address.Address)
	}
	resumed := freeze
	if restore != nil {
		resumed = at(restore.Metrics["restored_unix"])
		add(MarkRestored, resumed, restore.Address)
		if t := restore.Metrics["started_unix"]; t > 0 {
			resumed = at(t)
			add(MarkStarted, resumed, restore.Address)
		}
		p.Window = resumed - freeze
	}
	for _, pr := range r.Probes {
		if t, ok := firstGood(pr.Samples, resumed); ok {
			add(MarkFirstGood, t, "probe "+pr.Name)
		}
	}
	sort.SliceStable(p.Marks, func(i, j int) bool { return p.Marks[i].At < p.Marks[j].At })
	return p
}

// firstGood is when the first successful answer after t arrived.
func firstGood(samples []Sample, t float64) (float64, bool) {
	best, ok := 0.0, false
	for _, s := range samples {
		if done := s.At + s.Latency; s.OK && done >= t && (!ok || done < best) {
			best, ok = done, true
		}
	}
	return best, ok
}
