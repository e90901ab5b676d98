package buffer

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/testkit"
	"github.com/pspf/pspf-edge/internal/wait"
)

// The tests of this file hold the promise that a sequence number (the
// record ID a sink forwards) is never given to a second, different record:
// not after kill -9, a power cut that loses the unsynced tail, a flipped
// byte, a cut, emptied or deleted segment. IDs are checked against payloads,
// which are unique, so a reused ID shows up as one sequence carrying two
// payloads.

// idBook remembers which payload each sequence carried, wherever it was
// seen (a sink before a crash, a reader after recovery).
type idBook struct {
	bySeq     map[uint64]string
	byPayload map[string][]uint64
}

func newIDBook() *idBook {
	return &idBook{bySeq: map[uint64]string{}, byPayload: map[string][]uint64{}}
}

// add records that seq carried payload; it fails the test when seq was seen
// with another payload.
func (b *idBook) add(t testing.TB, where string, seq uint64, payload string) {
	t.Helper()
	if old, ok := b.bySeq[seq]; ok {
		if old != payload {
			t.Fatalf("%s: sequence %d reused: it carried %q, now %q", where, seq, old, payload)
		}
		return
	}
	b.bySeq[seq] = payload
	b.byPayload[payload] = append(b.byPayload[payload], seq)
}

func (b *idBook) clone() *idBook {
	c := newIDBook()
	for s, p := range b.bySeq {
		c.bySeq[s] = p
		c.byPayload[p] = append(c.byPayload[p], s)
	}
	return c
}

// dups counts payloads seen under more than one sequence.
func (b *idBook) dups() int {
	n := 0
	for _, seqs := range b.byPayload {
		if len(seqs) > 1 {
			n++
		}
	}
	return n
}

// readBook drains a new reader called name and adds every record to book.
func readBook(t testing.TB, l *Log, name string, book *idBook, where string) int {
	t.Helper()
	r, err := l.Reader(name)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var last uint64
	for {
		l.mu.Lock()
		done := r.next >= l.next
		l.mu.Unlock()
		if done {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		recs, err := r.Read(ctx, nil, 0)
		cancel()
		if err != nil {
			t.Fatalf("%s: Read: %v", where, err)
		}
		for _, rec := range recs {
			if rec.Seq <= last {
				t.Fatalf("%s: sequence %d after %d", where, rec.Seq, last)
			}
			last = rec.Seq
			book.add(t, where, rec.Seq, string(rec.Payload))
			n++
		}
	}
	if err := l.RemoveReader(name); err != nil {
		t.Fatal(err)
	}
	return n
}

// num reads a numeric attribute of a JSON log record.
func num(m map[string]any, key string) uint64 {
	f, _ := m[key].(float64)
	return uint64(f)
}

// lastSegPath returns the path of the newest segment file in dir.
func lastSegPath(t testing.TB, dir string) string {
	t.Helper()
	nums, err := listSegments(dir)
	if err != nil || len(nums) == 0 {
		t.Fatalf("no segment in %s: %v", dir, err)
	}
	return filepath.Join(dir, segName(nums[len(nums)-1]))
}

const envIDsChild = "BUFFER_TEST_IDS_CHILD" // dir round mode

// idsChild appends batches of unique payloads "r<round>-<i>" forever and
// prints "A <i>" once payloads 0..i-1 are durable (Sync returned); a sink
// goroutine reads the log and prints "S <seq> <payload>" for every record it
// delivers, durable or not, and acks it. It runs until it is killed.
func idsChild(arg string) {
	var dir, mode string
	var round int
	if _, err := fmt.Sscanf(arg, "%s %d %s", &dir, &round, &mode); err != nil {
		fmt.Fprintln(os.Stderr, "bad child arg:", err)
		os.Exit(2)
	}
	l, err := Open(dir, Options{Sync: SyncMode(mode), SegmentBytes: 8 << 10, MaxBytes: 64 << 20, SyncInterval: 2 * time.Millisecond, AckInterval: 5 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriterSize(os.Stdout, 4096)
	emit := func(lines []string) {
		mu.Lock()
		for _, s := range lines {
			out.WriteString(s)
			out.WriteByte('\n')
		}
		out.Flush()
		mu.Unlock()
	}
	sink, err := l.Reader("sink")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reader:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	go func() {
		var lines []string
		for {
			recs, err := sink.Read(ctx, nil, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sink read:", err)
				os.Exit(2)
			}
			lines = lines[:0]
			for _, r := range recs {
				lines = append(lines, fmt.Sprintf("S %d %s", r.Seq, r.Payload))
			}
			emit(lines)
			sink.Ack(recs[len(recs)-1].Seq)
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(round), 3))
	for i := 0; ; {
		ps := make([][]byte, 1+rng.IntN(20))
		for k := range ps {
			ps[k] = fmt.Appendf(nil, "r%d-%d", round, i+k)
		}
		last, err := l.Append(ctx, ps)
		if err == nil {
			err = l.Sync(ctx, last)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(2)
		}
		i += len(ps)
		emit([]string{"A " + strconv.Itoa(i)})
	}
}

// TestKill9FlippedByteIDs kills an appending child (with a sink that
// delivers records before they are durable) at random moments and flips one
// byte of its active segment between runs. Every sequence must name one
// payload for good; a flipped byte may cost at most the one record it hit,
// and nothing else acknowledged is lost.
func TestKill9FlippedByteIDs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 2; seed++ {
		mode := SyncInterval
		if seed%2 == 0 {
			mode = SyncBatch
		}
		t.Run(fmt.Sprintf("seed%d-%s", seed, mode), func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(seed, 11))
			book := newIDBook()
			delivered := map[string]bool{} // by the sink before a kill, or readable after recovery
			acked := map[int]int{}         // round -> payloads 0..n-1 durable
			const rounds = 25
			flips := 0
			var lostCounted uint64
			runChild := func(round int) {
				cmd := exec.Command(exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %s", envIDsChild, dir, round, mode))
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer cmd.Wait()
				defer cmd.Process.Kill() // also when the test fails meanwhile
				delay := time.Duration(5+rng.IntN(100)) * time.Millisecond
				watchdog := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
				var timer *time.Timer
				rd := bufio.NewReader(stdout)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						break // EOF; a last line torn by the kill has no newline and is ignored
					}
					f := strings.Fields(line)
					switch {
					case len(f) == 2 && f[0] == "A":
						if timer == nil {
							timer = time.AfterFunc(delay, func() { cmd.Process.Kill() })
						}
						if n, err := strconv.Atoi(f[1]); err == nil {
							acked[round] = max(acked[round], n)
						}
					case len(f) == 3 && f[0] == "S" && strings.HasPrefix(f[2], "r"):
						seq, err := strconv.ParseUint(f[1], 10, 64)
						if err != nil {
							t.Fatalf("bad sink line %q", line)
						}
						book.add(t, fmt.Sprintf("round %d sink", round), seq, f[2])
						delivered[f[2]] = true
					}
				}
				watchdog.Stop()
			}
			for round := 0; round < rounds; round++ {
				runChild(round)

				// Flip one byte anywhere in the active segment.
				path := lastSegPath(t, dir)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > 0 {
					off := rng.IntN(len(b))
					b[off] ^= byte(1 + rng.IntN(255))
					if err := os.WriteFile(path, b, 0o644); err != nil {
						t.Fatal(err)
					}
					flips++
				}

				l, err := Open(dir, Options{SegmentBytes: 8 << 10, MaxBytes: 64 << 20})
				if err != nil {
					t.Fatalf("round %d: Open after kill: %v", round, err)
				}
				readBook(t, l, "check", book, fmt.Sprintf("round %d recovery", round))
				lostCounted += l.Stats().Lost
				if err := l.Close(); err != nil {
					t.Fatalf("round %d: Close: %v", round, err)
				}
			}
			// Everything still in the log, read once more.
			l, err := Open(dir, Options{SegmentBytes: 8 << 10, MaxBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			final := newIDBook()
			readBook(t, l, "final", final, "final")
			l.Close()
			for s, p := range final.bySeq {
				book.add(t, "final", s, p)
				delivered[p] = true
			}
			lost, durable := 0, 0
			for round, n := range acked {
				for i := 0; i < n; i++ {
					durable++
					if !delivered[fmt.Sprintf("r%d-%d", round, i)] {
						lost++
					}
				}
			}
			t.Logf("%d rounds, %d flips: %d durable records, %d lost by payload, %d counted lost, %d IDs, %d payloads under two IDs",
				rounds, flips, durable, lost, lostCounted, len(book.bySeq), book.dups())
			if durable == 0 {
				t.Fatal("the child never reported a durable record")
			}
			if lost > flips {
				t.Fatalf("%d acknowledged records lost to %d flipped bytes, want at most one per flip", lost, flips)
			}
			if uint64(lost) > lostCounted {
				t.Fatalf("%d acknowledged records lost, %d counted: every loss must be counted", lost, lostCounted)
			}
			if d := book.dups(); d != 0 {
				t.Fatalf("%d payloads under two IDs; each was appended once", d)
			}
		})
	}
}

// snapshot appends records to a fresh log (synced, then an unsynced tail
// of two records), lets a sink read (deliver) all of them, and returns a
// copy of the directory taken while the log is open (the state a power cut
// leaves, before the unsynced tail is lost) and one taken after Close.
func powerCutSnapshot(t *testing.T) (crash, clean string, book *idBook, o Options) {
	t.Helper()
	dir := t.TempDir()
	o = Options{SegmentBytes: 1 << 10, MaxBytes: 1 << 20, Sync: SyncBatch, AckInterval: time.Millisecond}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ps [][]byte
	for i := 0; i < 60; i++ {
		ps = append(ps, fmt.Appendf(nil, "a-%03d-xxxxxxxxxxxxxxxxxxxx", i))
	}
	last, err := l.Append(ctx, ps)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, [][]byte{[]byte("b-000-unsynced-xxxxxxxx"), []byte("b-001-unsynced-xxxxxxxx")}); err != nil {
		t.Fatal(err)
	}
	book = newIDBook()
	l.Reader("keep") // never acks: keeps every segment
	r, _ := l.Reader("sink")
	for got := 0; got < 62; {
		recs, err := r.Read(ctx, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			book.add(t, "sink before the cut", rec.Seq, string(rec.Payload))
		}
		got += len(recs)
	}
	// The sink acked the first 55 records; wait until its cursor is
	// persisted, as it would be a moment later.
	if err := r.Ack(55); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the cursors persisted", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "sink"+cursorSuffix))
		a, err2 := decodeCursor(b)
		_, err3 := os.Stat(filepath.Join(dir, "keep"+cursorSuffix))
		return err == nil && err2 == nil && a.Acked == 55 && err3 == nil
	})
	crash = filepath.Join(t.TempDir(), "crash")
	copyDir(t, dir, crash)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	clean = filepath.Join(t.TempDir(), "clean")
	copyDir(t, dir, clean)
	return crash, clean, book, o
}

// reopenAndAppend opens dir, appends five new records and reads the whole
// log into a copy of book, failing on any reused sequence. It returns the
// log's Lost count and the records read.
func reopenAndAppend(t *testing.T, dir string, o Options, book *idBook, tag string) (uint64, int) {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("%s: Open: %v", tag, err)
	}
	defer l.Close()
	var ps [][]byte
	for i := 0; i < 5; i++ {
		ps = append(ps, fmt.Appendf(nil, "c-%s-%d", tag, i))
	}
	if _, err := l.Append(context.Background(), ps); err != nil {
		t.Fatalf("%s: Append: %v", tag, err)
	}
	n := readBook(t, l, "after", book.clone(), tag)
	return l.Stats().Lost, n
}

// TestPowerCutIDs cuts a log the way a power cut (or a damaged card) can
// leave it: the unsynced tail truncated at every offset of its last two
// records, the last segment emptied or deleted, a middle segment deleted.
// The reopened log must give new records new sequences, and count exactly
// the records it knows were lost.
func TestPowerCutIDs(t *testing.T) {
	crash, clean, book, o := powerCutSnapshot(t)
	tail := lastSegPath(t, crash)
	offs := frameOffsets(t, tail)
	fi, err := os.Stat(tail)
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) < 3 {
		t.Fatalf("tail holds %d records, want >= 3", len(offs))
	}
	t.Run("unsynced tail cut at every offset", func(t *testing.T) {
		for cut := offs[len(offs)-2]; cut <= fi.Size(); cut++ {
			dir := filepath.Join(t.TempDir(), "d")
			copyDir(t, crash, dir)
			if err := os.Truncate(filepath.Join(dir, filepath.Base(tail)), cut); err != nil {
				t.Fatal(err)
			}
			lost, n := reopenAndAppend(t, dir, o, book, fmt.Sprintf("cut%d", cut))
			// The cut records were never durable: nothing acknowledged is
			// lost, so nothing is counted; their sequences are not reused.
			if lost != 0 {
				t.Fatalf("cut at %d: lost %d, want 0 (the cut records were not durable)", cut, lost)
			}
			want := 60 + 5
			switch {
			case cut >= fi.Size():
				want += 2
			case cut >= offs[len(offs)-1]:
				want++
			}
			if n != want {
				t.Fatalf("cut at %d: read %d records, want %d", cut, n, want)
			}
		}
	})
	segs, _ := listSegments(crash)
	inTail := uint64(len(offs))
	type cutCase struct {
		name      string
		dir       string
		mut       func(t *testing.T, dir string)
		wantLost  uint64
		wantCount int
	}
	cases := []cutCase{
		{"crash: last segment emptied", crash, func(t *testing.T, dir string) {
			os.Truncate(lastSegPath(t, dir), 0)
		}, 0, 62 - int(inTail) + 5},
		{"crash: last segment deleted", crash, func(t *testing.T, dir string) {
			os.Remove(lastSegPath(t, dir))
		}, 0, 62 - int(inTail) + 5},
		{"clean: last segment emptied", clean, func(t *testing.T, dir string) {
			os.Truncate(lastSegPath(t, dir), 0)
		}, inTail, 62 - int(inTail) + 5},
		{"clean: last segment deleted", clean, func(t *testing.T, dir string) {
			os.Remove(lastSegPath(t, dir))
		}, inTail, 62 - int(inTail) + 5},
		{"clean: last record cut", clean, func(t *testing.T, dir string) {
			os.Truncate(lastSegPath(t, dir), offs[len(offs)-1]+3)
		}, 1, 62 - 1 + 5},
	}
	// A middle segment deleted: its records are lost, counted when a
	// reader crosses the gap.
	for _, base := range []string{crash, clean} {
		mid := filepath.Join(base, segName(segs[1]))
		h, _, err := readHeader(mid)
		h2, _, err2 := readHeader(filepath.Join(base, segName(segs[2])))
		if err != nil || err2 != nil {
			t.Fatal(err, err2)
		}
		n := h2.First - h.First
		cases = append(cases, cutCase{"middle segment deleted (" + filepath.Base(base) + ")", base, func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, segName(segs[1])))
		}, n, 62 - int(n) + 5})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			copyDir(t, tc.dir, dir)
			tc.mut(t, dir)
			lost, n := reopenAndAppend(t, dir, o, book, "x")
			if lost != tc.wantLost || n != tc.wantCount {
				t.Fatalf("lost %d, read %d; want lost %d, read %d", lost, n, tc.wantLost, tc.wantCount)
			}
		})
	}
}

// TestFlippedByteCostsOneRecord flips one payload byte of a record in the
// middle of a sealed segment and of the active one: only that record is
// lost, counted once, and logged with its file and offset; the records
// after it in the same segment are read.
func TestFlippedByteCostsOneRecord(t *testing.T) {
	for _, which := range []string{"sealed", "active"} {
		t.Run(which, func(t *testing.T) {
			dir, o := makeLog(t, 80)
			nums, _ := listSegments(dir)
			path := filepath.Join(dir, segName(nums[1]))
			if which == "active" {
				path = lastSegPath(t, dir)
			}
			h, _, _ := readHeader(path)
			offs := frameOffsets(t, path)
			if len(offs) < 5 {
				t.Fatalf("segment holds %d records, want >= 5", len(offs))
			}
			k := len(offs) / 2
			b, _ := os.ReadFile(path)
			b[offs[k]+frameOverhead+2] ^= 0x5a
			os.WriteFile(path, b, 0o644)
			bad := h.First + uint64(k)

			var logs testkit.LogBuffer
			o.Logger = logs.JSONLogger(slog.LevelDebug)
			l := openT(t, dir, o)
			got := readAll(t, l, "r")
			var want []uint64
			for s := uint64(1); s <= 80; s++ {
				if s != bad {
					want = append(want, s)
				}
			}
			wantSeqs(t, got, want)
			readAll(t, l, "r2") // a second reader crossing the damage
			if lost := l.Stats().Lost; lost != 1 {
				t.Fatalf("lost %d, want 1\n%s", lost, logs.String())
			}
			warns := logs.Records(t, "lost")
			if len(warns) != 1 {
				t.Fatalf("got %d log lines about lost records, want 1:\n%s", len(warns), logs.String())
			}
			w := warns[0]
			if w["level"] != "WARN" || !strings.Contains(fmt.Sprint(w["path"]), filepath.Base(path)) ||
				num(w, "offset") != uint64(offs[k]) || num(w, "lost") != 1 {
				t.Fatalf("log line %v: want WARN with path %s, offset %d, lost 1", w, path, offs[k])
			}
		})
	}
}

// TestCrashRecoveryLogsInfo: reopening after a crash logs one INFO line
// saying what was cut and where each reader resumes; a clean reopen does
// not.
func TestCrashRecoveryLogsInfo(t *testing.T) {
	crash, clean, _, o := powerCutSnapshot(t)
	tail := lastSegPath(t, crash)
	offs := frameOffsets(t, tail)
	if err := os.Truncate(tail, offs[len(offs)-1]+5); err != nil {
		t.Fatal(err)
	}
	var logs testkit.LogBuffer
	o.Logger = logs.JSONLogger(slog.LevelDebug)
	l, err := Open(crash, o)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	infos := logs.Records(t, "recovered after a crash")
	if len(infos) != 1 {
		t.Fatalf("got %d recovery lines, want 1:\n%s", len(infos), logs.String())
	}
	m := infos[0]
	if m["level"] != "INFO" || num(m, "cut_bytes") != 5 || num(m, "last_seq") != 61 ||
		!strings.Contains(fmt.Sprint(m["readers"]), "sink resumes at 56 (up to 6 records may be sent again)") {
		t.Fatalf("recovery line %v: want INFO, cut_bytes 5, last_seq 61, the sink's resume point", m)
	}
	var clogs testkit.LogBuffer
	o.Logger = clogs.JSONLogger(slog.LevelDebug)
	l, err = Open(clean, o)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if n := len(clogs.Records(t, "recovered")); n != 0 {
		t.Fatalf("clean reopen logged %d recovery lines:\n%s", n, clogs.String())
	}
}

// TestMemoryKindCrashIDs: the Memory kind holds records in memory, where
// sinks read them, and a crash loses them; their sequences must not be
// given to the records appended after the restart.
func TestMemoryKindCrashIDs(t *testing.T) {
	dir := t.TempDir()
	o := Options{Kind: Memory, MemoryBytes: 4 << 10, SegmentBytes: 2 << 10, MaxBytes: 1 << 20}
	l := openT(t, dir, o)
	ctx := context.Background()
	book := newIDBook()
	r, _ := l.Reader("sink")
	for round := 0; round < 3; round++ {
		var ps [][]byte
		for i := 0; i < 150; i++ { // more than MemoryBytes: some spill to segments
			ps = append(ps, fmt.Appendf(nil, "m%d-%03d-xxxxxxxxxxxxxxxx", round, i))
		}
		if _, err := l.Append(ctx, ps); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(ps); {
			recs, err := r.Read(ctx, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				book.add(t, fmt.Sprintf("round %d sink", round), rec.Seq, string(rec.Payload))
			}
			got += len(recs)
		}
		if st := l.Stats(); st.MemoryBytes == 0 {
			t.Fatalf("round %d: no record held in memory", round)
		}
		// Crash: what is on disk now is what the restart finds.
		crash := filepath.Join(t.TempDir(), "crash")
		copyDir(t, dir, crash)
		l.Close()
		dir = crash
		l = openT(t, dir, o)
		r, _ = l.Reader("sink")
	}
	var ps [][]byte
	for i := 0; i < 10; i++ {
		ps = append(ps, fmt.Appendf(nil, "after-%d", i))
	}
	if _, err := l.Append(ctx, ps); err != nil {
		t.Fatal(err)
	}
	readBook(t, l, "all", book, "after the crashes")
}

// TestReadVersion1 opens a log written in the format of version 1 (no
// header copy, no salt, no reservation): its records are read, new records
// follow them in a version 2 segment, and a clean reopen stays contiguous.
func TestReadVersion1(t *testing.T) {
	dir := t.TempDir()
	seq := uint64(1)
	for num := uint64(1); num <= 2; num++ {
		b := make([]byte, headerSizeV1)
		copy(b, segMagic[:])
		binary.LittleEndian.PutUint16(b[4:6], 1)
		binary.LittleEndian.PutUint64(b[8:16], num)
		binary.LittleEndian.PutUint64(b[16:24], seq)
		binary.LittleEndian.PutUint64(b[24:32], uint64(time.Now().UnixNano()))
		binary.LittleEndian.PutUint32(b[32:36], crc32.Checksum(b[0:32], castagnoli))
		for i := 0; i < 5; i++ {
			b = appendFrame(b, seq, payload(seq), 0)
			seq++
		}
		if err := os.WriteFile(filepath.Join(dir, segName(num)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A cursor file as version 1 wrote it: the reader resumes after 4.
	c := make([]byte, cursorV1Size)
	copy(c, "PCUR")
	binary.LittleEndian.PutUint16(c[4:6], 1)
	binary.LittleEndian.PutUint64(c[8:16], 4)
	binary.LittleEndian.PutUint32(c[16:20], crc32.Checksum(c[:16], castagnoli))
	if err := os.WriteFile(filepath.Join(dir, "old"+cursorSuffix), c, 0o644); err != nil {
		t.Fatal(err)
	}
	if vr, err := Verify(dir); err != nil || !vr.OK() || vr.Records != 10 {
		t.Fatalf("Verify of a version 1 log: %+v %v", vr, err)
	}
	o := Options{SegmentBytes: 1 << 10, MaxBytes: 1 << 20}
	var logs testkit.LogBuffer
	o.Logger = logs.JSONLogger(slog.LevelDebug)
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(logs.Records(t, "older version")); n != 1 {
		t.Fatalf("got %d lines about the older format, want 1:\n%s", n, logs.String())
	}
	wantSeqs(t, readAll(t, l, "r"), seqRange(1, 10))
	wantSeqs(t, readAll(t, l, "old"), seqRange(5, 10))
	l.RemoveReader("old")
	appendN(t, l, 11, 5, 5)
	l.Close()
	l = openT(t, dir, o)
	wantSeqs(t, readAll(t, l, "r2"), seqRange(1, 15))
	appendN(t, l, 16, 1, 1)
	if st := l.Stats(); st.Lost != 0 || st.Records != 16 {
		t.Fatalf("lost %d, records %d; want 0, 16", st.Lost, st.Records)
	}
}

// TestCrashRecoveryQuietWhenEmpty: a log that holds nothing and lost
// nothing (a dead-letter log, usually) reports its crash recovery at DEBUG,
// so that one crash gives one INFO line per pipeline, not one per log.
func TestCrashRecoveryQuietWhenEmpty(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 1, 3, 3)
	crash := filepath.Join(t.TempDir(), "crash")
	copyDir(t, dir, crash)
	var logs testkit.LogBuffer
	l2, err := Open(crash, Options{Logger: logs.JSONLogger(slog.LevelDebug)})
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
	if infos := logs.Records(t, "recovered after a crash"); len(infos) != 1 || infos[0]["level"] != "INFO" {
		t.Fatalf("a log holding records: got %v, want one INFO line", infos)
	}

	empty := filepath.Join(t.TempDir(), "empty")
	e := openT(t, empty, Options{})
	e.Reader("dead.sink")
	wait.For(t, 5*time.Second, "the new reader's cursor file", func() bool { _, err := os.Stat(filepath.Join(empty, "dead.sink"+cursorSuffix)); return err == nil })
	crash = filepath.Join(t.TempDir(), "crash2")
	copyDir(t, empty, crash)
	var elogs testkit.LogBuffer
	l3, err := Open(crash, Options{Logger: elogs.JSONLogger(slog.LevelDebug)})
	if err != nil {
		t.Fatal(err)
	}
	l3.Close()
	if infos := elogs.Records(t, "recovered after a crash"); len(infos) != 1 || infos[0]["level"] != "DEBUG" {
		t.Fatalf("an empty log: got %v, want one DEBUG line", infos)
	}
}
