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

// BenchmarkCheckpoint100k: a checkpoint of 100k changed keys (all the keys
// of the table, 8-byte keys, 32-byte values). Budget: 200 ms per op.
//
//	go test -run '^$' -bench Checkpoint100k -benchtime 10x ./state
func BenchmarkCheckpoint100k(b *testing.B) {
	const n = 100_000
	db := openDB(b, "", 64<<20, nil)
	tb := mustTable(b, db, "op1.window", 0)
	fillTable(b, db, tb, n)
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
		st, err := db.Checkpoint(nil)
		if err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - c0
		bytes += st.BytesWritten
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "bytes-written/op")
	// CPU time of the process (user+sys, GC included) per checkpoint: a
	// figure that, unlike ns/op, does not grow when other processes load
	// the machine.
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkGetHit reads cached keys into a reused buffer (0 allocs).
func BenchmarkGetHit(b *testing.B) {
	db := openDB(b, "", 64<<20, nil)
	tb := mustTable(b, db, "t", 0)
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
}

// BenchmarkPutHit overwrites cached keys (0 allocs: the value buffer is
// reused).
func BenchmarkPutHit(b *testing.B) {
	db := openDB(b, "", 64<<20, nil)
	tb := mustTable(b, db, "t", 0)
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
}

// BenchmarkGetMiss reads keys evicted from a tiny cache back from the file.
func BenchmarkGetMiss(b *testing.B) {
	const n = 100_000
	db := openDB(b, "", 64<<10, nil)
	tb := mustTable(b, db, "t", 0)
	fillTable(b, db, tb, n)
	dst := make([]byte, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		var err error
		if dst, _, err = tb.Get(benchKey((i*7919)%n), dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenVerify: Open of a state file of 1M keys (8-byte keys,
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
