package state

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The benchmarks of the Store interface run against every store kind
// (storeKinds, store_suite_test.go): compare the memory store with bbolt as
// the ratio of their figures, e.g.
//
//	go test -run '^$' -bench 'Checkpoint100k|GetHit|PutHit|GetMiss' -benchtime 10x ./state

// BenchmarkCheckpoint100k: a checkpoint of 100k changed keys (all the keys
// of the table, 8-byte keys, 32-byte values). Budget for bbolt: 200 ms per
// op; the memory store writes nothing.
//
//	go test -run '^$' -bench Checkpoint100k -benchtime 10x ./state
func BenchmarkCheckpoint100k(b *testing.B) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			const n = 100_000
			s := k.open(b, b.TempDir(), Options{CacheBytes: 64 << 20})
			tb := table(b, s, "op1.window", 0)
			fillTable(b, s, tb, n)
			val := make([]byte, 32)
			var bytes int64
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				val[0] = byte(i)
				for k := range n {
					if err := tb.Put(benchKey(k), val); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				b.StartTimer()
				c0 := cpuTime()
				st := commit(b, s, nil)
				cpu += cpuTime() - c0
				bytes += st.BytesWritten
			}
			b.ReportMetric(float64(bytes)/float64(b.N), "bytes-written/op")
			// CPU time of the process (user+sys, GC included) per
			// checkpoint: a figure that, unlike ns/op, does not grow when
			// other processes load the machine.
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkGetHit reads cached keys into a reused buffer (0 allocs).
func BenchmarkGetHit(b *testing.B) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			s := k.open(b, b.TempDir(), Options{CacheBytes: 64 << 20})
			tb := table(b, s, "t", 0)
			keys := make([][]byte, 1024)
			for i := range keys {
				keys[i] = []byte(fmt.Sprintf("sensor-%06d", i))
				_ = tb.Put(keys[i], make([]byte, 48))
			}
			dst := make([]byte, 0, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var err error
				if dst, _, err = tb.Get(keys[i&1023], dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPutHit overwrites cached keys (0 allocs: the value buffer is
// reused).
func BenchmarkPutHit(b *testing.B) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			s := k.open(b, b.TempDir(), Options{CacheBytes: 64 << 20})
			tb := table(b, s, "t", 0)
			keys := make([][]byte, 1024)
			val := make([]byte, 48)
			for i := range keys {
				keys[i] = []byte(fmt.Sprintf("sensor-%06d", i))
				_ = tb.Put(keys[i], val)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				val[0] = byte(i)
				if err := tb.Put(keys[i&1023], val); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGetMiss reads 100k keys in a scattered order: bbolt with a
// cache of 64 KiB reads them back from the file; the memory store, which
// has no file, holds them all (its budget must: 64 MiB), so this is what
// a memory store saves on state that does not fit bbolt's cache.
func BenchmarkGetMiss(b *testing.B) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			const n = 100_000
			budget := int64(64 << 10)
			if k.hardBudget {
				budget = 64 << 20
			}
			s := k.open(b, b.TempDir(), Options{CacheBytes: budget})
			tb := table(b, s, "t", 0)
			fillTable(b, s, tb, n)
			dst := make([]byte, 0, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var err error
				if dst, _, err = tb.Get(benchKey((i*7919)%n), dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenVerify (bbolt only: the memory store opens empty): Open of a state file of 1M keys (8-byte keys,
// 32-byte values; about 64 MiB of pages), file in the page cache, which is
// how a reload finds it: the structure check reads every page once.
//
//	go test -run '^$' -bench OpenVerify -benchtime 5x ./state
func BenchmarkOpenVerify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.db")
	db := openDB(b, path, 256<<20, nil)
	tb := mustTable(b, db, "op1.window", 0)
	fillTable(b, db, tb, 1_000_000)
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := verifyFile(path, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Size())/(1<<20), "file-MiB")
}
