package serial

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
)

// chunkReader hands out data in chunks of the given sizes, cycling; a size
// of 0 is a read timeout (0, nil).
type chunkReader struct {
	data   []byte
	sizes  []int
	i      int
	closed error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.closed != nil {
			return 0, r.closed
		}
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = r.sizes[r.i%len(r.sizes)]
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// drain calls Next until the stream's own error and returns the frames
// (copied) and the dropped-frame errors by kind.
func drain(t testing.TB, f Framer) (frames []string, oversize, incomplete int) {
	for range 1 << 20 {
		fr, err := f.Next()
		switch {
		case err == nil && fr == nil:
		case err == nil:
			frames = append(frames, string(fr))
		case errors.Is(err, ErrOversize):
			oversize++
		case errors.Is(err, ErrIncomplete):
			incomplete++
		default:
			return frames, oversize, incomplete
		}
	}
	t.Fatalf("framer does not end")
	return
}

func TestLineFramer(t *testing.T) {
	tests := []struct {
		name, in, delim string
		max             int
		want            []string
		oversize, inc   int
	}{
		{"lines", "a,1\nb,2\n", "\n", 16, []string{"a,1", "b,2"}, 0, 0},
		{"crlf", "a\r\nb\r\n\r\n", "\r\n", 16, []string{"a", "b", ""}, 0, 0},
		{"no end", "a\nnever ends", "\n", 16, []string{"a"}, 0, 1},
		{"oversize then resync", "ok\n0123456789abcdef-too-long\nnext\n", "\n", 8, []string{"ok", "next"}, 1, 0},
		{"exactly max", "12345678\n123456789\nx\n", "\n", 8, []string{"12345678", "x"}, 1, 0},
		{"nul and invalid utf-8", "\x00\x00\n\xff\xfe\xc3\n", "\n", 16, []string{"\x00\x00", "\xff\xfe\xc3"}, 0, 0},
		{"garbage without delimiter", string(bytes.Repeat([]byte{0xAA}, 100)), "\n", 8, nil, 1, 0},
		{"oversize split delimiter", "0123456789\r\nok\r\n", "\r\n", 4, []string{"ok"}, 1, 0},
		{"multi-byte delimiter", "a||b||", "||", 4, []string{"a", "b"}, 0, 0},
	}
	for _, tt := range tests {
		for _, sizes := range [][]int{nil, {1}, {3, 0, 2}} {
			t.Run(tt.name, func(t *testing.T) {
				f := NewLineFramer(&chunkReader{data: []byte(tt.in), sizes: sizes}, []byte(tt.delim), tt.max)
				got, over, inc := drain(t, f)
				if !slices.Equal(got, tt.want) || over != tt.oversize || inc != tt.inc {
					t.Errorf("chunks %v: got %q oversize %d incomplete %d, want %q %d %d", sizes, got, over, inc, tt.want, tt.oversize, tt.inc)
				}
			})
		}
	}
}

func TestFixedFramer(t *testing.T) {
	f := NewFixedFramer(&chunkReader{data: []byte("abcdefgh\x00\xffz"), sizes: []int{3, 0, 1}}, 4)
	got, _, inc := drain(t, f)
	if want := []string{"abcd", "efgh"}; !slices.Equal(got, want) || inc != 1 {
		t.Errorf("got %q incomplete %d, want %q 1", got, inc, want)
	}
}

func TestLengthPrefixFramer(t *testing.T) {
	frame := func(width int, order binary.ByteOrder, body string) []byte {
		p := make([]byte, width)
		switch width {
		case 1:
			p[0] = byte(len(body))
		case 2:
			order.PutUint16(p, uint16(len(body)))
		case 4:
			order.PutUint32(p, uint32(len(body)))
		}
		return append(p, body...)
	}
	for _, width := range []int{1, 2, 4} {
		for _, order := range []binary.ByteOrder{binary.BigEndian, binary.LittleEndian} {
			var in []byte
			in = append(in, frame(width, order, "hello")...)
			in = append(in, frame(width, order, "")...)
			in = append(in, frame(width, order, "this one is far too long")...)
			in = append(in, frame(width, order, "\x00\xff")...)
			in = append(in, frame(width, order, "cut")[:width+1]...)
			for _, sizes := range [][]int{nil, {1}, {2, 0}} {
				f := NewLengthPrefixFramer(&chunkReader{data: in, sizes: sizes}, width, order, 8)
				got, over, inc := drain(t, f)
				if want := []string{"hello", "", "\x00\xff"}; !slices.Equal(got, want) || over != 1 || inc != 1 {
					t.Errorf("width %d %v chunks %v: got %q oversize %d incomplete %d, want %q 1 1", width, order, sizes, got, over, inc, want)
				}
			}
		}
	}
	// A huge declared length is skipped, not allocated.
	in := append([]byte{0xff, 0xff, 0xff, 0xf0}, bytes.Repeat([]byte{1}, 100)...)
	f := NewLengthPrefixFramer(&chunkReader{data: in}, 4, binary.BigEndian, 8)
	if _, over, _ := drain(t, f); over != 1 {
		t.Errorf("got %d oversize, want 1", over)
	}
	if c := cap(f.w.buf); c != 12 {
		t.Errorf("got buffer of %d bytes, want 12", c)
	}
}

// TestFramersDoNotAllocate: after construction, no frame costs an allocation.
func TestFramersDoNotAllocate(t *testing.T) {
	data := bytes.Repeat([]byte("x,1.5,\x00\xff\ntoo long a line for the framer\n"), 200)
	r := &chunkReader{}
	sizes := []int{5, 0, 64}
	framers := map[string]Framer{
		"line":   NewLineFramer(r, []byte("\n"), 16),
		"fixed":  NewFixedFramer(r, 7),
		"prefix": NewLengthPrefixFramer(r, 1, binary.BigEndian, 16),
	}
	for name, f := range framers {
		allocs := testing.AllocsPerRun(10, func() {
			r.data, r.sizes, r.i = data, sizes, 0
			for {
				if _, err := f.Next(); err != nil && !errors.Is(err, ErrOversize) && !errors.Is(err, ErrIncomplete) {
					break
				}
			}
			switch f := f.(type) { // reset the sticky EOF for the next run
			case *LineFramer:
				f.w.err = nil
			case *FixedFramer:
				f.w.err = nil
			case *LengthPrefixFramer:
				f.w.err = nil
			}
		})
		if allocs != 0 {
			t.Errorf("%s: got %v allocations per stream, want 0", name, allocs)
		}
	}
}

func fuzzSizes(b []byte) []int {
	sizes := make([]int, 0, 8)
	for _, c := range b[:min(len(b), 8)] {
		sizes = append(sizes, int(c%17))
	}
	if len(sizes) > 0 && slices.Max(sizes) == 0 {
		sizes[0] = 1
	}
	return sizes
}

func FuzzLineFramer(f *testing.F) {
	f.Add([]byte("a\nb\r\n\x00\xff\n"), []byte("\n"), 8, []byte{3, 0})
	f.Add([]byte("0123456789\r\nok\r\n"), []byte("\r\n"), 4, []byte{1})
	f.Fuzz(func(t *testing.T, data, delim []byte, max int, chunks []byte) {
		if len(delim) == 0 || len(delim) > 8 || max < 1 || max > 4096 {
			return
		}
		fr := NewLineFramer(&chunkReader{data: data, sizes: fuzzSizes(chunks)}, delim, max)
		frames, over, _ := drain(t, fr)
		for _, x := range frames {
			if len(x) > max {
				t.Fatalf("frame of %d bytes, max %d", len(x), max)
			}
			if bytes.Contains([]byte(x), delim) {
				t.Fatalf("frame %q holds the delimiter", x)
			}
		}
		if cap(fr.w.buf) != max+len(delim) {
			t.Fatalf("buffer grew to %d", cap(fr.w.buf))
		}
		if over == 0 { // nothing dropped: the frames are the input's delimited prefix
			var b []byte
			for _, x := range frames {
				b = append(append(b, x...), delim...)
			}
			if !bytes.HasPrefix(data, b) {
				t.Fatalf("frames %q are not a prefix of the input", frames)
			}
		}
	})
}

func FuzzFixedFramer(f *testing.F) {
	f.Add([]byte("abcdefgh\x00"), 4, []byte{1, 0, 3})
	f.Fuzz(func(t *testing.T, data []byte, size int, chunks []byte) {
		if size < 1 || size > 4096 {
			return
		}
		fr := NewFixedFramer(&chunkReader{data: data, sizes: fuzzSizes(chunks)}, size)
		frames, _, _ := drain(t, fr)
		if want := len(data) / size; len(frames) != want {
			t.Fatalf("got %d frames, want %d", len(frames), want)
		}
		for i, x := range frames {
			if x != string(data[i*size:(i+1)*size]) {
				t.Fatalf("frame %d: got %q", i, x)
			}
		}
	})
}

func FuzzLengthPrefixFramer(f *testing.F) {
	f.Add([]byte("\x05hello\x00\x02\xff\x00"), 1, true, 8, []byte{2, 0})
	f.Add([]byte("\xff\xff\xff\xff\x00"), 4, false, 16, []byte{1})
	f.Fuzz(func(t *testing.T, data []byte, width int, big bool, max int, chunks []byte) {
		if (width != 1 && width != 2 && width != 4) || max < 1 || max > 4096 {
			return
		}
		var order binary.ByteOrder = binary.LittleEndian
		if big {
			order = binary.BigEndian
		}
		fr := NewLengthPrefixFramer(&chunkReader{data: data, sizes: fuzzSizes(chunks)}, width, order, max)
		frames, _, _ := drain(t, fr)
		for _, x := range frames {
			if len(x) > max {
				t.Fatalf("frame of %d bytes, max %d", len(x), max)
			}
		}
		if cap(fr.w.buf) != max+width {
			t.Fatalf("buffer grew to %d", cap(fr.w.buf))
		}
	})
}
