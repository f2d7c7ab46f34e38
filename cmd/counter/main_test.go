package main

import "testing"

func TestBallast(t *testing.T) {
	b := fill(3*pageSize + 100)
	for i := range b {
		if b[i] != pattern(i) {
			t.Fatalf("byte %d: %d, want %d", i, b[i], pattern(i))
		}
	}
	if i := verify(b); i != -1 {
		t.Fatalf("verify of a good ballast: %d", i)
	}
	b[2*pageSize+17] ^= 1
	if i := verify(b); i != 2*pageSize+17 {
		t.Errorf("verify found %d, want %d", i, 2*pageSize+17)
	}
	big := fill(300 * pageSize) // every one of the 256 pages, and again
	if i := verify(big); i != -1 {
		t.Errorf("verify: %d", i)
	}
}

func BenchmarkVerify(b *testing.B) {
	ballast := fill(64 << 20)
	b.SetBytes(int64(len(ballast)))
	for b.Loop() {
		verify(ballast)
	}
}
