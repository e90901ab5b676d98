package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzCheckStored: checkStored, the decoder of the values read from the
// file, never panics; what it accepts is either a value whose checksum
// matches (resealing its cached form gives the same bytes) or a value
// without checksum written within the legacy bound; what it refuses wraps
// ErrCorrupt.
func FuzzCheckStored(f *testing.F) {
	sealed := make([]byte, hdr+5)
	putHeader(sealed, 1_700_000_000_000_000_000)
	copy(sealed[hdr:], "value")
	seal([]byte("key"), sealed)
	f.Add([]byte("key"), sealed, int64(0))
	f.Add([]byte("key"), append(binary.BigEndian.AppendUint64(nil, 1_600_000_000_000_000_000), "old"...), int64(1_700_000_000_000_000_000))
	f.Add([]byte("k"), []byte{0x80, 1, 2}, int64(5))
	f.Fuzz(func(t *testing.T, k, v []byte, bound int64) {
		wt, body, legacy, err := checkStored(k, v, bound)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if wt < 0 || wt != wtimeOf(v) {
			t.Fatalf("write time %d, header says %d", wt, wtimeOf(v))
		}
		cached := appendCached(nil, v, wt, body, legacy)
		if !bytes.Equal(cached[hdr:], body) || wtimeOf(cached) != wt {
			t.Fatalf("cached form %x does not hold time %d and body %x", cached, wt, body)
		}
		seal(k, cached)
		if legacy {
			if bound <= 0 || wt > bound || len(v) != legacyHdr+len(body) {
				t.Fatalf("accepted a value without checksum written at %d, bound %d", wt, bound)
			}
			return
		}
		if !bytes.Equal(cached, v) {
			t.Fatalf("resealed %x, stored %x", cached, v)
		}
	})
}

// BenchmarkSeal: the checksum a checkpoint computes per written value
// (8-byte key, 32-byte value, as in BenchmarkCheckpoint100k), and the check
// of a read one (BenchmarkGetMiss).
//
//	go test -run '^$' -bench 'Seal|CheckStored' ./state
func BenchmarkSeal(b *testing.B) {
	k, v := benchKey(1), make([]byte, hdr+32)
	putHeader(v, 1_700_000_000_000_000_000)
	for b.Loop() {
		seal(k, v)
	}
}

func BenchmarkCheckStored(b *testing.B) {
	k, v := benchKey(1), make([]byte, hdr+32)
	putHeader(v, 1_700_000_000_000_000_000)
	seal(k, v)
	for b.Loop() {
		if _, _, _, err := checkStored(k, v, 0); err != nil {
			b.Fatal(err)
		}
	}
}
