package workflows_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/mig-project/mig/engine"
	"github.com/mig-project/mig/engine/lab"
)

// BenchmarkMigrate moves the counter with 16 MiB, 256 MiB and 1 GiB of
// ballast from h1 to h2 with each strategy, and with the hand-run CRIU
// pipeline as the baseline, in the same run:
//
//	go test -run '^$' -bench Migrate -benchtime 5x ./workflows
//	go test -run '^$' -bench 'Migrate/(lazy|live)/' -benchtime 3x ./workflows
//
// It reports medians: the client-visible downtime, the pause from the
// freeze to the restored tasks running, CRIU's frozen time, and the whole
// run; and each strategy's downtime as a ratio of the baseline's.
func BenchmarkMigrate(b *testing.B) {
	baseline := map[int]float64{}
	for _, c := range []struct{ name, workflow string }{
		{"handrun", "testdata/handrun.hcl"},
		{"cold", "cold.hcl"},
		{"pageserver", "pageserver.hcl"},
		{"lazy", "lazy.hcl"},
		{"live", "live.hcl"},
	} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%dMiB", c.name, size), func(b *testing.B) { benchMigrate(b, c.name, c.workflow, size, baseline) })
		}
	}
}

// benchMigrate moves the counter with size MiB of ballast b.N times with
// workflow, and reports the medians.
func benchMigrate(b *testing.B, name, workflow string, size int, baseline map[int]float64) {
	if theLab == nil {
		b.Skip("needs root and a lab")
	}
	var down, pause, frozen, total []float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := startCounterWith(b, size, lab.StartOptions{})
		b.StartTimer()
		rec, code, out := s.apply(b, workflow)
		b.StopTimer()
		if code != 0 {
			s.cleanup()
			b.Fatalf("%s exited %d\n%s", workflow, code, out)
		}
		down = append(down, longestGap(rec))
		if p := rec.Pause(); p != nil {
			pause = append(pause, p.Window)
		}
		frozen = append(frozen, sum(rec, "frozen_time"))
		total = append(total, rec.Ended.Sub(rec.Started).Seconds())
		s.cleanup()
	}
	d := median(down)
	b.ReportMetric(d*1000, "downtime-ms")
	b.ReportMetric(median(pause)*1000, "pause-ms")
	b.ReportMetric(median(frozen)*1000, "frozen-ms")
	b.ReportMetric(median(total)*1000, "run-ms")
	if name == "handrun" {
		baseline[size] = d
	} else if baseline[size] > 0 {
		b.ReportMetric(d/baseline[size], "x-handrun")
	}
	b.ReportMetric(0, "ns/op")
}

// benchSizes are the counter's ballast sizes in MiB.
var benchSizes = []int{16, 256, 1024}

const benchBallast = 256 // MiB

func longestGap(r *engine.Record) float64 {
	for _, p := range r.Probes {
		return p.Summary.LongestGap
	}
	return 0
}

func sum(r *engine.Record, metric string) float64 {
	var s float64
	for _, st := range r.Steps {
		s += st.Metrics[metric]
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkMigrateContainer moves a runc container running the counter
// with 256 MiB of ballast from h1 to h2 with each container workflow, and
// with the runc CLI pipeline (checkpoint, tar, scp, untar, restore) as the
// baseline, in the same run:
//
//	go test -run '^$' -bench MigrateContainer -benchtime 5x ./workflows
func BenchmarkMigrateContainer(b *testing.B) {
	var baseline float64
	for _, c := range []struct{ name, workflow string }{
		{"runc", "testdata/runc-handrun.hcl"},
		{"cold", "container-cold.hcl"},
		{"lazy", "container-lazy.hcl"},
		{"live", "container-live.hcl"},
	} {
		b.Run(c.name, func(b *testing.B) {
			if theLab == nil {
				b.Skip("needs root and a lab")
			}
			var annotations map[string]string
			if c.name == "runc" {
				conf := filepath.Join(theLab.Dir(), "runc-criu.conf")
				if err := os.WriteFile(conf, []byte("network-lock nftables\nskip-in-flight\n"), 0o644); err != nil {
					b.Fatal(err)
				}
				annotations = map[string]string{"org.criu.config": conf}
			}
			var down, total []float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ct := startContainerWith(b, "bench", benchBallast, annotations)
				b.StartTimer()
				rec, code, out := ct.apply(c.workflow)
				b.StopTimer()
				if code != 0 {
					b.Fatalf("%s exited %d\n%s", c.workflow, code, out)
				}
				if st := ct.state("h2", ct.restoreID); st.Status != "running" {
					b.Fatalf("container %s on h2: %+v, want running", ct.restoreID, st)
				}
				down = append(down, longestGap(rec))
				total = append(total, rec.Ended.Sub(rec.Started).Seconds())
				ct.cleanup()
			}
			d := median(down)
			b.ReportMetric(d*1000, "downtime-ms")
			b.ReportMetric(median(total)*1000, "run-ms")
			if c.name == "runc" {
				baseline = d
			} else if baseline > 0 {
				b.ReportMetric(d/baseline, "x-runc")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
