package mqttc

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// chunkConn is a net.Conn whose Reads return data in the chunk sizes
// given (cycled), then io.EOF.
type chunkConn struct {
	net.Conn
	data   []byte
	chunks []int
	i      int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := len(p)
	if len(c.chunks) > 0 {
		k = min(k, max(c.chunks[c.i%len(c.chunks)], 1))
		c.i++
	}
	n := copy(p[:min(k, len(p))], c.data)
	c.data = c.data[n:]
	return n, nil
}

// records returns TLS-framed records with bodies of the sizes given.
func records(sizes []int) (all []byte, ends []int) {
	for i, n := range sizes {
		h := []byte{23, 3, 3, 0, 0}
		binary.BigEndian.PutUint16(h[3:], uint16(n))
		all = append(all, h...)
		all = append(all, bytes.Repeat([]byte{byte(i)}, n)...)
		ends = append(ends, len(all))
	}
	return all, ends
}

// checkRecordReader reads in all through a recordReader over a socket
// that returns it in chunks, with Reads of the sizes in asks (cycled),
// and checks that the bytes come through whole and in order and that no
// Read hands on bytes of two records (ends are the records' end offsets;
// bytes after the last end are a truncated record).
func checkRecordReader(t *testing.T, all []byte, ends []int, chunks, asks []int) {
	t.Helper()
	rr := newRecordReader(&chunkConn{data: all, chunks: chunks})
	var got []byte
	for i := 0; ; i++ {
		p := make([]byte, max(asks[i%len(asks)], 1))
		n, err := rr.Read(p)
		if n > 0 {
			start := len(got)
			got = append(got, p[:n]...)
			for _, e := range ends {
				if start < e && len(got) > e {
					t.Fatalf("a Read handed on bytes %d to %d, across the record end at %d", start, len(got), e)
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if n == 0 {
			t.Fatal("a Read returned nothing and no error")
		}
	}
	if !bytes.Equal(got, all) {
		t.Fatalf("got %d bytes, want the %d sent", len(got), len(all))
	}
	if rr.r != rr.w {
		t.Errorf("%d bytes left in the buffer after the end", rr.w-rr.r)
	}
}

// TestRecordReaderBoundaries checks that the recordReader hands on every
// byte in order and never a byte past the end of the current record,
// whatever the socket's read sizes and crypto/tls's: records from empty
// to larger than its buffer (16 KiB + 2 KiB, TLS 1.2's largest), read
// from the socket a byte at a time, in random chunks or whole.
func TestRecordReaderBoundaries(t *testing.T) {
	all, ends := records([]int{0, 20, 1, 300, connReadBuffer + 2048, 17, 0, 5000, 4})
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n, hi int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = 1 + rng.IntN(hi)
		}
		return s
	}
	for _, tc := range []struct {
		name         string
		chunks, asks []int
	}{
		{"whole", nil, []int{1 << 20}},
		{"bytes", []int{1}, []int{1 << 20}},
		{"small asks", nil, []int{1, 3, 5, 512}},
		{"random", random(50, 3000), random(37, 20000)},
		{"random small", random(50, 7), random(37, 9)},
	} {
		t.Run(tc.name, func(t *testing.T) { checkRecordReader(t, all, ends, tc.chunks, tc.asks) })
	}
}

// FuzzRecordReader feeds the recordReader any bytes from the socket, in
// any chunks, read with any sizes: every byte comes through in order, no
// Read crosses a record end as its headers say, and nothing panics.
func FuzzRecordReader(f *testing.F) {
	all, _ := records([]int{3, 0, 40})
	f.Add(all, []byte{1, 2, 3}, []byte{5, 200})
	f.Add([]byte{23, 3}, []byte{1}, []byte{1})
	f.Fuzz(func(t *testing.T, data, chunks, asks []byte) {
		var ends []int
		for off := 0; off+tlsRecordHeader <= len(data); {
			off += tlsRecordHeader + int(binary.BigEndian.Uint16(data[off+3:]))
			if off <= len(data) {
				ends = append(ends, off)
			}
		}
		toInts := func(b []byte, scale int) []int {
			s := []int{}
			for _, x := range b {
				s = append(s, 1+int(x)*scale)
			}
			if len(s) == 0 {
				s = append(s, 1<<20)
			}
			return s
		}
		checkRecordReader(t, data, ends, toInts(chunks, 1), toInts(asks, 7))
	})
}

// TestRecordReaderDrained checks drained: not while a record is handed on
// in part (crypto/tls then holds that part), nor while bytes are
// buffered, nor after a socket read that filled half of the buffer; yes
// at a record's end with the buffer empty after a short read.
func TestRecordReaderDrained(t *testing.T) {
	all, _ := records([]int{10, 10})
	rr := newRecordReader(&chunkConn{data: all})
	p := make([]byte, 8)
	if n, err := rr.Read(p); n != 8 || err != nil {
		t.Fatalf("read %d %v, want 8", n, err)
	}
	if rr.drained() {
		t.Fatal("drained with a record handed on in part and another buffered")
	}
	p = make([]byte, 100)
	if n, err := rr.Read(p); n != 7 || err != nil {
		t.Fatalf("read %d %v, want the first record's last 7 bytes", n, err)
	}
	if rr.drained() {
		t.Fatal("drained with the second record buffered")
	}
	if n, err := rr.Read(p); n != 15 || err != nil {
		t.Fatalf("read %d %v, want the second record, 15 bytes", n, err)
	}
	if !rr.drained() {
		t.Fatal("not drained at a record's end, buffer empty, after a short socket read")
	}

	big, _ := records([]int{connReadBuffer}) // fills the buffer: not a short read
	rr = newRecordReader(&chunkConn{data: big})
	if _, err := rr.Read(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if rr.drained() {
		t.Fatal("drained after a socket read that filled the buffer")
	}

	// A read that fails midway through a record leaves crypto/tls a part.
	rr = newRecordReader(&chunkConn{data: all[:8]})
	if n, err := rr.Read(make([]byte, 100)); n != 8 || err != nil {
		t.Fatalf("read %d %v, want 8", n, err)
	}
	if rr.drained() {
		t.Fatal("drained in the middle of a record")
	}
}
