package buffer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Benchmarks hold the budgets of issue 3. Run with:
//
//	go test -run '^$' -bench 'Append|Read' -benchtime 5000000x ./buffer/
//	go test -run '^$' -bench Backlog1GB ./buffer/
//
// (BenchmarkBacklog1GB writes a 1 GB backlog once, in its TempDir; give it
// the default -benchtime, it loops Open/Close.)

const (
	benchRecord = 200 // payload bytes
	benchBatch  = 100 // records per Append, like one source batch
)

func benchPayloads() [][]byte {
	ps := make([][]byte, benchBatch)
	for i := range ps {
		ps[i] = make([]byte, benchRecord)
		for j := range ps[i] {
			ps[i][j] = byte(i + j)
		}
	}
	return ps
}

// appendLog appends n records with sync interval 10ms while another
// goroutine calls Sync (the acker of a pipeline), and returns the time
// until the last record was durable and the bytes on disk.
func appendLog(b *testing.B, n int) (time.Duration, int64) {
	dir := b.TempDir()
	l, err := Open(dir, Options{Sync: SyncInterval, SyncInterval: 10 * time.Millisecond, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ps := benchPayloads()
	ctx := context.Background()
	var last atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // acker: waits for durability like the pipeline runner
		defer wg.Done()
		var synced uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			if s := last.Load(); s > synced {
				if err := l.Sync(ctx, s); err != nil {
					b.Error(err)
					return
				}
				synced = s
			} else {
				// Nothing new to ack: the acker's polling pace. It shapes
				// what is measured (how many appends one Sync covers), so
				// it stays as the figures were taken with it.
				time.Sleep(time.Millisecond)
			}
		}
	}()
	start := time.Now()
	for i := 0; i < n; i += benchBatch {
		s, err := l.Append(ctx, ps[:min(benchBatch, n-i)])
		if err != nil {
			b.Fatal(err)
		}
		last.Store(s)
	}
	if err := l.Sync(ctx, last.Load()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	close(done)
	wg.Wait()
	l.Close()
	return elapsed, dirBytes(b, dir)
}

// appendPlain writes the same bytes the log writes (the framed records,
// 216 bytes each) in the same batches to one file with an fsync every 10ms:
// the ceiling for appendLog. With framed false it writes only the payloads
// (200 bytes each), a stricter baseline reported for information.
func appendPlain(b *testing.B, n int, framed bool) time.Duration {
	f, err := os.Create(filepath.Join(b.TempDir(), "plain"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var chunk []byte
	for i, p := range benchPayloads() {
		if framed {
			chunk = appendFrame(chunk, uint64(i+1), p, 0)
		} else {
			chunk = append(chunk, p...)
		}
	}
	frame := len(chunk) / benchBatch
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f.Sync()
			}
		}
	}()
	start := time.Now()
	for i := 0; i < n; i += benchBatch {
		if _, err := f.Write(chunk[:min(benchBatch, n-i)*frame]); err != nil {
			b.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	f.Sync()
	return time.Since(start)
}

func dirBytes(b *testing.B, dir string) int64 {
	var total int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err == nil {
			total += fi.Size()
		}
	}
	return total
}

// BenchmarkAppend appends 200-byte records in batches of 100 with sync
// interval 10ms, and writes the same bytes plainly with the same fsync
// cadence; it reports both rates, their ratio and the bytes on disk per
// payload byte. One op is one record. The host's disk is shared, so the
// runs alternate in 10 rounds (order rotated each round, dirty pages
// flushed before each run) and the ratios are of the summed times. For
// information it also reports the ratio against plain writes of the bare
// payloads (ratio_payload_only: the framing's bytes count against the log).
func BenchmarkAppend(b *testing.B) {
	const rounds = 10
	per := max(b.N/rounds, benchBatch)
	var logT, plainT, bareT time.Duration
	var diskBytes int64
	runs := []func(){
		func() {
			t, d := appendLog(b, per)
			logT += t
			diskBytes += d
		},
		func() { plainT += appendPlain(b, per, true) },
		func() { bareT += appendPlain(b, per, false) },
	}
	for i := 0; i < rounds; i++ {
		for j := range runs {
			syscall.Sync()
			runs[(i+j)%len(runs)]()
		}
	}
	n := float64(per * rounds)
	logRate, plainRate, bareRate := n/logT.Seconds(), n/plainT.Seconds(), n/bareT.Seconds()
	b.ReportMetric(logRate, "rec/s")
	b.ReportMetric(plainRate, "plain_rec/s")
	b.ReportMetric(logRate/plainRate, "ratio")
	b.ReportMetric(logRate/bareRate, "ratio_payload_only")
	b.ReportMetric(float64(diskBytes)/(n*benchRecord), "disk_B/payload_B")
}

// BenchmarkRead reads records sequentially through a Reader. One op is one
// record.
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	l, err := Open(dir, Options{Sync: SyncNone, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ps := benchPayloads()
	for i := 0; i < b.N; i += benchBatch {
		if _, err := l.Append(context.Background(), ps[:min(benchBatch, b.N-i)]); err != nil {
			b.Fatal(err)
		}
	}
	r, _ := l.Reader("bench")
	buf := make([]Record, 0, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for got := 0; got < b.N; {
		recs, err := r.Read(context.Background(), buf, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		got += len(recs)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rec/s")
}

// BenchmarkBacklog1GB writes a 1 GB backlog once, then measures opening it
// and the resident memory of a process holding it against one holding none.
// The backlog ends with a nearly full tail segment, the worst case for the
// tail scan of Open.
func BenchmarkBacklog1GB(b *testing.B) {
	dir := b.TempDir()
	opts := Options{Sync: SyncNone, MaxBytes: 4 << 30}
	l, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	ps := benchPayloads()
	for l.Stats().DiskBytes < 1<<30+DefaultSegmentBytes-64<<10 {
		if _, err := l.Append(context.Background(), ps); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			l, err := Open(dir, opts)
			if err != nil {
				b.Fatal(err)
			}
			l.Close()
		}
	})
	b.Run("rss", func(b *testing.B) {
		empty := b.TempDir()
		var full, none int64
		for b.Loop() {
			full = childRSS(b, dir)
			none = childRSS(b, empty)
		}
		b.ReportMetric(float64(full), "rss_backlog_kB")
		b.ReportMetric(float64(none), "rss_empty_kB")
		b.ReportMetric(float64(full-none), "rss_diff_kB")
	})
}

// childRSS runs rssChild on dir in a new process and returns its VmRSS.
func childRSS(b *testing.B, dir string) int64 {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRSSChild+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("rss child: %v", err)
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		b.Fatalf("rss child output %q: %v", out, err)
	}
	return kb
}
