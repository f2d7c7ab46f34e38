package steps

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// fakeRounds returns a Round that writes the given page counts in turn.
func fakeRounds(pages ...int64) (Round, *int) {
	calls := 0
	return func(ctx context.Context, n int) (int64, error) {
		calls++
		if n != calls {
			return 0, errors.New("rounds out of order")
		}
		if n > len(pages) {
			return pages[len(pages)-1], nil
		}
		return pages[n-1], nil
	}, &calls
}

func TestPrecopyStopPolicy(t *testing.T) {
	p := Policy{MaxRounds: 8, MinPages: 64, MaxGrowth: 0.10}
	cases := []struct {
		name   string
		pages  []int64
		rounds int
		why    string
	}{
		{"converges", []int64{50000, 4000, 300, 60}, 4, "≤ min_pages"},
		{"first round small", []int64{10}, 1, "≤ min_pages"},
		{"grows", []int64{50000, 20000, 22001}, 3, "more than"},
		{"grows within 10 %", []int64{50000, 20000, 22000, 1000, 64}, 5, "≤ min_pages"},
		{"max rounds", []int64{90000, 80000, 70000, 60000, 50000, 40000, 30000, 20000, 10000}, 8, "max_rounds 8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			round, calls := fakeRounds(tc.pages...)
			pages, why, err := Precopy(context.Background(), p, round)
			if err != nil {
				t.Fatal(err)
			}
			if len(pages) != tc.rounds || *calls != tc.rounds {
				t.Errorf("%d rounds (%d calls), want %d: %v", len(pages), *calls, tc.rounds, pages)
			}
			if !strings.Contains(why, tc.why) {
				t.Errorf("stopped because %q, want %q", why, tc.why)
			}
		})
	}
}

func TestPrecopyRoundFails(t *testing.T) {
	boom := errors.New("boom")
	round := func(ctx context.Context, n int) (int64, error) {
		if n == 2 {
			return 0, boom
		}
		return 1000, nil
	}
	pages, _, err := Precopy(context.Background(), DefaultPolicy, round)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "round 2") || len(pages) != 1 {
		t.Errorf("pages %v, err %v", pages, err)
	}
}

func TestPrecopyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	round := func(ctx context.Context, n int) (int64, error) {
		cancel()
		return 100000, nil
	}
	pages, _, err := Precopy(ctx, DefaultPolicy, round)
	if !errors.Is(err, context.Canceled) || len(pages) != 1 {
		t.Errorf("pages %v, err %v", pages, err)
	}
}
