package criu

import (
	"os"

	"github.com/checkpoint-restore/go-criu/v8/stats"
)

// DumpStats decodes the stats-dump file CRIU wrote into dir. Times are in
// seconds: freezing_time, frozen_time, memdump_time, memwrite_time; counts:
// pages_scanned, pages_written, pages_lazy, pages_skipped_parent. It
// returns nil when there is no such file.
func DumpStats(dir string) map[string]float64 {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	st, err := stats.CriuGetDumpStats(d)
	if err != nil || st == nil {
		return nil
	}
	return map[string]float64{
		"freezing_time":        us(st.GetFreezingTime()),
		"frozen_time":          us(st.GetFrozenTime()),
		"memdump_time":         us(st.GetMemdumpTime()),
		"memwrite_time":        us(st.GetMemwriteTime()),
		"pages_scanned":        float64(st.GetPagesScanned()),
		"pages_written":        float64(st.GetPagesWritten()),
		"pages_lazy":           float64(st.GetPagesLazy()),
		"pages_skipped_parent": float64(st.GetPagesSkippedParent()),
	}
}

// RestoreStats decodes stats-restore from dir: restore_time (seconds),
// pages_restored, forking_time (seconds). Nil when there is no such file.
func RestoreStats(dir string) map[string]float64 {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	st, err := stats.CriuGetRestoreStats(d)
	if err != nil || st == nil {
		return nil
	}
	return map[string]float64{
		"restore_time":   us(st.GetRestoreTime()),
		"forking_time":   us(st.GetForkingTime()),
		"pages_restored": float64(st.GetPagesRestored()),
	}
}

func us[T uint32 | uint64](v T) float64 { return float64(v) / 1e6 }
