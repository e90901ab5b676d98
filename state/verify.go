package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// Open checks the structure of the file before bbolt maps it. bbolt trusts
// its pages: a damaged page makes it panic (guard.go turns that into
// ErrCorrupt), but some damage is worse than a panic. A child pointer
// turned into the id of an ancestor sends bbolt's tree walks (its Check,
// Bucket.Stats, the freelist rebuild) round a cycle for ever, or until the
// stack overflows, which kills the process; a damaged freelist count makes
// it allocate gigabytes at Open. verifyFile reads the file with ReadAt
// (never the map, so a truncated file cannot fault) and checks, iteratively
// and visiting each page at most once:
//
//   - the two meta pages: magic, version, page size and checksum, the one
//     bbolt will use (the valid one with the higher transaction id), and
//     that the file is long enough for every page it counts;
//   - the freelist: its page, its count, each id in range and listed once;
//   - every page reachable from the root bucket, nested buckets included:
//     id and type in its header, span in range, referenced once, not also
//     free; every element inside its page; keys non-empty, at most
//     bolt.MaxKeySize, strictly increasing in each page and within the
//     range their parent's branch keys give them; keys and values one
//     after the other, never overlapping; leaf flags known; bucket values
//     well formed, inline pages included (with no bucket inside them);
//   - every value of every table: its checksum, or, for a value written
//     before checksums, that its write time is within the file's legacy
//     bound (value.go), naming the table and key that fail.
//
// That is the structure every bbolt tree walk relies on, and the checksums
// of the state it holds.
//
// The layout is bbolt's file format version 2 (go.etcd.io/bbolt
// internal/common: page.go, meta.go, bucket.go), in native byte order.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elemSize       = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	metaSize       = 64 // magic, version, page size, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	bucketHdrSize  = 16 // root pgid u64, sequence u64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	flagBucket   = 0x01 // leaf element flag: the value is a nested bucket

	noFreelist = ^uint64(0)

	minPageSize = 1 << 10
	maxPageSize = 1 << 24
)

// maxSpan bounds the bytes of one tree page with its overflow pages. bbolt
// never splits a node of up to 4 elements, so a page holds at most 4 of the
// largest elements this package writes (a key of MaxKeySize, a value of
// MaxValueSize plus its header); a span claimed larger is damage, and the
// bound keeps a damaged overflow count from making verify read gigabytes.
const maxSpan = pageHeaderSize + 4*(elemSize+bolt.MaxKeySize+MaxValueSize+hdr)

var native = binary.NativeEndian

// boltMeta is a decoded meta page.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages [0, pgid) are in use or free
	txid     uint64
}

// fileReport is what verifyFile found in a file it accepts.
type fileReport struct {
	// empty: the file is missing or has no bytes; bbolt creates a new one.
	empty bool
	// txid of the meta page bbolt will use.
	txid uint64
	// badMeta is set when one of the two meta pages is invalid: a commit
	// torn by a power cut, or damage. bbolt uses the other one, which may
	// be the previous commit.
	badMeta error
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// verifyFile checks the structure of the bbolt file at path (see above).
// A missing or empty file is accepted (report.empty). Damage, and any
// error reading the file, wrap ErrCorrupt. A lock function, when given,
// locks the open file before it is read (and returns how to unlock it):
// Open's shared lock against another process's writes; the DB's own
// check, under its exclusive lock, gives none.
func verifyFile(path string, lock func(*os.File) (unlock func(), err error)) (fileReport, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileReport{empty: true}, nil
	}
	if err != nil {
		return fileReport{}, err
	}
	defer f.Close()
	if lock != nil {
		unlock, err := lock(f)
		if err != nil {
			return fileReport{}, err
		}
		defer unlock()
	}
	st, err := f.Stat()
	if err != nil {
		return fileReport{}, err
	}
	if st.Size() == 0 {
		return fileReport{empty: true}, nil
	}
	return verifyData(f, st.Size())
}

// verifyData checks the file r of size bytes; see verifyFile.
func verifyData(r io.ReaderAt, size int64) (fileReport, error) {
	var rep fileReport
	m, err := readMetas(r, size, &rep)
	if err != nil {
		return rep, err
	}
	rep.txid = m.txid
	v := &verifier{r: r, ps: int64(m.pageSize), hwm: m.pgid}
	if v.hwm < 3 || uint64(size)/uint64(m.pageSize) < v.hwm {
		return rep, corruptf("file holds %d pages of %d bytes, its meta page counts %d (truncated?)", size/int64(m.pageSize), m.pageSize, m.pgid)
	}
	v.used = make([]byte, (v.hwm+7)/8)
	v.free = make([]byte, (v.hwm+7)/8)
	v.mark(v.used, 0)
	v.mark(v.used, 1)
	if m.freelist != noFreelist {
		if err := v.freelist(m.freelist); err != nil {
			return rep, err
		}
	}
	if err := v.tree(m.root); err != nil {
		return rep, err
	}
	return rep, v.legacy()
}

// readMetas reads both meta pages the way bbolt does and returns the one it
// will use: the valid one with the higher transaction id.
func readMetas(r io.ReaderAt, size int64, rep *fileReport) (boltMeta, error) {
	m0, err0 := readMeta(r, 0)
	ps := int64(m0.pageSize)
	if err0 != nil {
		// bbolt then looks for the second meta page at every power of two
		// from 1 KiB.
		for pos := int64(minPageSize); pos <= maxPageSize && pos < size-minPageSize; pos *= 2 {
			if m, err := readMeta(r, pos); err == nil {
				ps = int64(m.pageSize)
				break
			}
		}
		if ps == 0 {
			return boltMeta{}, corruptf("no valid meta page: page 0: %v", err0)
		}
	}
	m1, err1 := readMeta(r, ps)
	for i, e := range []struct {
		m   boltMeta
		err *error
	}{{m0, &err0}, {m1, &err1}} {
		if *e.err == nil && int64(e.m.pageSize) != ps {
			*e.err = corruptf("meta page %d: page size %d, the other says %d", i, e.m.pageSize, ps)
		}
	}
	switch {
	case err0 != nil && err1 != nil:
		return boltMeta{}, corruptf("both meta pages are invalid: %v; %v", err0, err1)
	case err0 != nil:
		rep.badMeta = fmt.Errorf("meta page 0: %w", err0)
		return m1, nil
	case err1 != nil:
		rep.badMeta = fmt.Errorf("meta page 1: %w", err1)
		return m0, nil
	case m1.txid > m0.txid:
		return m1, nil
	}
	return m0, nil
}

// readMeta decodes and validates the meta page at offset off.
func readMeta(r io.ReaderAt, off int64) (boltMeta, error) {
	var b [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(b[:], off); err != nil {
		return boltMeta{}, corruptf("read: %v", err)
	}
	mb := b[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(mb[:56])
	m := boltMeta{
		pageSize: native.Uint32(mb[8:]),
		root:     native.Uint64(mb[16:]),
		freelist: native.Uint64(mb[32:]),
		pgid:     native.Uint64(mb[40:]),
		txid:     native.Uint64(mb[48:]),
	}
	switch {
	case native.Uint32(mb[0:]) != boltMagic:
		return m, corruptf("bad magic")
	case native.Uint32(mb[4:]) != boltVersion:
		return m, corruptf("format version %d, want %d", native.Uint32(mb[4:]), boltVersion)
	case native.Uint64(mb[56:]) != h.Sum64():
		return m, corruptf("checksum mismatch")
	case m.pageSize < minPageSize || m.pageSize > maxPageSize || m.pageSize&(m.pageSize-1) != 0:
		return m, corruptf("page size %d", m.pageSize)
	}
	return m, nil
}

// verifier walks one file's pages.
type verifier struct {
	r    io.ReaderAt
	ps   int64  // page size
	hwm  uint64 // pages [0, hwm) exist
	used []byte // bitmap: page reachable (meta, freelist, tree)
	free []byte // bitmap: page listed in the freelist
	buf  []byte

	// ckpt holds the values of the checkpoint record (bucketCkpt) by key.
	ckpt map[string][]byte
	// oldest is the latest write time of a value without checksum, and
	// where it is (oldestTable nil when there is none).
	oldest                 int64
	oldestTable, oldestKey []byte
}

// legacy checks the values without checksum against the file's legacy
// bound, known once the walk has read the checkpoint record.
func (v *verifier) legacy() error {
	if v.oldestTable == nil {
		return nil
	}
	bound, err := legacyBound(v.ckpt[string(keyLegacy)], v.ckpt[string(keyTime)], v.ckpt != nil)
	if err != nil {
		return err
	}
	if bound <= 0 || v.oldest > bound {
		return corruptf("table %q: key %s: stored value has no checksum, but was written after checksums began (write time %d, bound %d)", v.oldestTable, showKey(v.oldestKey), v.oldest, bound)
	}
	return nil
}

// checkValue checks the value val of key k in the table bucket named table.
// The latest value without checksum is only noted (its key copied, not
// formatted: an old file may hold a million of them in write order) and
// judged by legacy once the walk is done.
func (v *verifier) checkValue(table, k, val []byte) error {
	if len(val) >= legacyHdr && binary.BigEndian.Uint64(val)&sumFlag == 0 {
		if wt := wtimeOf(val); v.oldestTable == nil || wt > v.oldest {
			v.oldest, v.oldestTable, v.oldestKey = wt, table, append(v.oldestKey[:0], k...)
		}
		return nil
	}
	if _, _, _, err := checkStored(k, val, 0); err != nil {
		return fmt.Errorf("table %q: %w", table, err)
	}
	return nil
}

func (v *verifier) mark(bm []byte, id uint64) { bm[id/8] |= 1 << (id % 8) }
func (v *verifier) has(bm []byte, id uint64) bool {
	return bm[id/8]&(1<<(id%8)) != 0
}

// page reads page id with its overflow pages, after checking its header
// against flags (any of them) and its span against limit, and marks its
// pages in use. The slice is valid until the next call.
func (v *verifier) page(id uint64, flags uint16, limit int64) ([]byte, error) {
	if id < 2 || id >= v.hwm {
		return nil, corruptf("page %d: out of range [2, %d)", id, v.hwm)
	}
	var h [pageHeaderSize]byte
	if _, err := v.r.ReadAt(h[:], int64(id)*v.ps); err != nil {
		return nil, corruptf("page %d: read: %v", id, err)
	}
	if got := native.Uint64(h[0:]); got != id {
		return nil, corruptf("page %d: header says page %d", id, got)
	}
	if f := native.Uint16(h[8:]); f&flags == 0 || f&(f-1) != 0 {
		return nil, corruptf("page %d: unexpected type %#x", id, f)
	}
	over := uint64(native.Uint32(h[12:]))
	if over >= v.hwm-id || int64(over+1) > limit/v.ps+1 {
		return nil, corruptf("page %d: %d overflow pages out of range", id, over)
	}
	for p := id; p <= id+over; p++ {
		switch {
		case v.has(v.used, p):
			return nil, corruptf("page %d: referenced twice", p)
		case v.has(v.free, p):
			return nil, corruptf("page %d: in use and in the freelist", p)
		}
		v.mark(v.used, p)
	}
	n := int64(over+1) * v.ps
	if int64(cap(v.buf)) < n {
		v.buf = make([]byte, n)
	}
	v.buf = v.buf[:n]
	if _, err := v.r.ReadAt(v.buf, int64(id)*v.ps); err != nil {
		return nil, corruptf("page %d: read: %v", id, err)
	}
	return v.buf, nil
}

// freelist checks the freelist page and marks the free pages.
func (v *verifier) freelist(id uint64) error {
	// The ids take 8 bytes each, the count one more when it overflows.
	p, err := v.page(id, flagFreelist, pageHeaderSize+8*int64(v.hwm+1))
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	count, idx := uint64(native.Uint16(p[10:])), uint64(0)
	if count == 0xFFFF {
		count, idx = native.Uint64(p[pageHeaderSize:]), 1
	}
	if count > v.hwm || pageHeaderSize+8*(idx+count) > uint64(len(p)) {
		return corruptf("freelist: page %d: %d ids do not fit", id, count)
	}
	for i := idx; i < idx+count; i++ {
		fid := native.Uint64(p[pageHeaderSize+8*i:])
		switch {
		case fid < 2 || fid >= v.hwm:
			return corruptf("freelist: page %d out of range [2, %d)", fid, v.hwm)
		case v.has(v.free, fid):
			return corruptf("freelist: page %d listed twice", fid)
		case v.has(v.used, fid):
			return corruptf("freelist: page %d is the freelist itself", fid)
		}
		v.mark(v.free, fid)
	}
	return nil
}

// node is a page still to visit: a page id, or the bytes of an inline
// bucket's page, with the range its keys must be in (lo <= key < hi; nil
// bounds are open), and what its bucket holds.
type node struct {
	id     uint64
	inline []byte
	lo, hi []byte
	kind   uint8
	table  []byte // the table's name, for kindTable
}

// What a bucket holds, for the checks of its values.
const (
	kindRoot  uint8 = iota // the root bucket: the buckets below
	kindTable              // a table's data: checksummed values
	kindCkpt               // the checkpoint record
	kindOther              // values not checked (TTL index, metadata)
)

// tree walks the root bucket and every bucket under it, iteratively: each
// page is read once, so a cycle or a shared page is reported, never
// followed.
func (v *verifier) tree(root uint64) error {
	stack := []node{{id: root, kind: kindRoot}}
	var keys [][]byte
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p, where := n.inline, "inline page"
		if p == nil {
			var err error
			if p, err = v.page(n.id, flagBranch|flagLeaf, maxSpan); err != nil {
				return err
			}
			where = fmt.Sprintf("page %d", n.id)
		} else if len(p) < pageHeaderSize || native.Uint16(p[8:]) != flagLeaf {
			return corruptf("inline page: not a leaf")
		}
		branch := native.Uint16(p[8:]) == flagBranch
		count := int(native.Uint16(p[10:]))
		if pageHeaderSize+elemSize*count > len(p) {
			return corruptf("%s: %d elements do not fit", where, count)
		}
		keys = keys[:0]
		// bbolt writes the elements' keys and values one after the other,
		// after the element array: no two overlap. That also bounds the
		// work on inline pages by the bytes of their parent.
		end := uint64(pageHeaderSize + elemSize*count)
		for i := range count {
			e := pageHeaderSize + elemSize*i
			var pos, ksize, vsize uint64
			if branch {
				pos, ksize = uint64(native.Uint32(p[e:])), uint64(native.Uint32(p[e+4:]))
			} else {
				flags := native.Uint32(p[e:])
				if flags&^flagBucket != 0 {
					return corruptf("%s: element %d: unknown flags %#x", where, i, flags)
				}
				pos, ksize, vsize = uint64(native.Uint32(p[e+4:])), uint64(native.Uint32(p[e+8:])), uint64(native.Uint32(p[e+12:]))
			}
			if ksize == 0 || ksize > bolt.MaxKeySize || uint64(e)+pos+ksize+vsize > uint64(len(p)) {
				return corruptf("%s: element %d: key of %d and value of %d bytes at +%d do not fit", where, i, ksize, vsize, pos)
			}
			if uint64(e)+pos < end {
				return corruptf("%s: element %d: its data overlaps what comes before it", where, i)
			}
			end = uint64(e) + pos + ksize + vsize
			k := p[uint64(e)+pos : uint64(e)+pos+ksize]
			switch {
			case i > 0 && bytes.Compare(keys[i-1], k) >= 0:
				return corruptf("%s: element %d: keys out of order", where, i)
			case n.lo != nil && bytes.Compare(k, n.lo) < 0, n.hi != nil && bytes.Compare(k, n.hi) >= 0:
				return corruptf("%s: element %d: key outside the range of its parent", where, i)
			}
			keys = append(keys, k)
			if branch {
				continue
			}
			val := p[uint64(e)+pos+ksize : uint64(e)+pos+ksize+vsize]
			if native.Uint32(p[e:])&flagBucket == 0 {
				switch n.kind {
				case kindTable:
					if err := v.checkValue(n.table, k, val); err != nil {
						return err
					}
				case kindCkpt:
					if v.ckpt == nil {
						v.ckpt = make(map[string][]byte)
					}
					v.ckpt[string(k)] = bytes.Clone(val)
				}
				continue
			}
			if n.inline != nil {
				// bbolt inlines only buckets without buckets in them.
				return corruptf("%s: element %d: a bucket inside an inline bucket", where, i)
			}
			if len(val) < bucketHdrSize {
				return corruptf("%s: element %d: bucket value of %d bytes", where, i, len(val))
			}
			c := node{kind: kindOther}
			if n.kind == kindRoot {
				switch name, ok := bytes.CutPrefix(k, []byte("t/")); {
				case ok:
					c.kind, c.table = kindTable, bytes.Clone(name)
				case bytes.Equal(k, bucketCkpt):
					c.kind = kindCkpt
				}
			}
			if r := native.Uint64(val); r != 0 {
				c.id = r
			} else {
				c.inline = bytes.Clone(val[bucketHdrSize:])
			}
			stack = append(stack, c)
		}
		if !branch {
			continue
		}
		for i := range count {
			e := pageHeaderSize + elemSize*i
			c := node{id: native.Uint64(p[e+8:]), lo: bytes.Clone(keys[i]), hi: n.hi, kind: n.kind, table: n.table}
			if i+1 < count {
				c.hi = bytes.Clone(keys[i+1])
			}
			stack = append(stack, c)
		}
	}
	return nil
}
