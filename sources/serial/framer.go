package serial

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// The framers split a byte stream from a serial line into frames. They read
// through one buffer allocated at construction, sized by the maximum frame,
// and never allocate after that, whatever the stream holds.
//
// Next returns the next frame. The frame aliases the framer's buffer: it is
// valid until the next call, and the caller copies what it keeps. Next
// returns (nil, nil) when the reader returned no bytes and no error (a read
// timeout): the caller may call again. ErrOversize and ErrIncomplete report a
// dropped frame; the stream goes on and Next may be called again. Any other
// error is the reader's, and sticky.
type Framer interface {
	Next() ([]byte, error)
}

var (
	// ErrOversize reports a frame longer than the maximum, dropped. A line
	// framer skips to the next delimiter; a length-prefix framer skips the
	// declared length.
	ErrOversize = errors.New("frame larger than max_frame dropped")
	// ErrIncomplete reports the bytes of an unfinished frame dropped because
	// the stream ended (the device went away) before the frame did.
	ErrIncomplete = errors.New("incomplete frame dropped at end of stream")
)

// window is a fixed buffer over a reader: buf[start:end] is unread.
type window struct {
	r          io.Reader
	buf        []byte
	start, end int
	err        error // sticky read error, returned once the buffer is used up
}

// fill compacts the buffer and reads once into its free space. It reports
// how many bytes were read.
func (w *window) fill() int {
	if w.err != nil {
		return 0
	}
	if w.start > 0 {
		w.end = copy(w.buf, w.buf[w.start:w.end])
		w.start = 0
	}
	if w.end == len(w.buf) {
		return 0
	}
	n, err := w.r.Read(w.buf[w.end:])
	if n < 0 || n > len(w.buf)-w.end {
		n = 0 // a broken reader must not break the framer
	}
	w.end += n
	if err != nil {
		w.err = err
	}
	return n
}

func (w *window) buffered() int { return w.end - w.start }

// LineFramer splits at a delimiter ("\n", "\r\n", or any byte string). The
// delimiter is not part of the frame.
type LineFramer struct {
	w        window
	delim    []byte
	max      int
	scanned  int  // bytes of buf[start:end] known to hold no delimiter
	skipping bool // dropping an oversize frame up to the next delimiter
}

// NewLineFramer returns a framer reading r, splitting at delim, with frames
// of at most max bytes. delim must not be empty and max must be positive.
func NewLineFramer(r io.Reader, delim []byte, max int) *LineFramer {
	return &LineFramer{w: window{r: r, buf: make([]byte, max+len(delim))}, delim: bytes.Clone(delim), max: max}
}

// Next returns the next frame; see Framer.
func (f *LineFramer) Next() ([]byte, error) {
	w := &f.w
	for {
		if i := bytes.Index(w.buf[w.start+f.scanned:w.end], f.delim); i >= 0 {
			frame := w.buf[w.start : w.start+f.scanned+i]
			w.start += f.scanned + i + len(f.delim)
			f.scanned = 0
			if f.skipping {
				f.skipping = false // resynchronised: the next frame starts here
				continue
			}
			return frame, nil
		}
		// No delimiter; a partial one may sit at the end.
		f.scanned = max(0, w.buffered()-len(f.delim)+1)
		if w.buffered() == len(w.buf) {
			// Full without a delimiter: the frame is longer than max. Keep
			// what could be the start of a delimiter and drop the rest.
			keep := len(f.delim) - 1
			w.start = w.end - keep
			f.scanned = 0
			if !f.skipping {
				f.skipping = true
				return nil, ErrOversize
			}
			continue
		}
		if w.fill() == 0 {
			if w.err == nil {
				return nil, nil
			}
			return f.atEnd()
		}
	}
}

// atEnd drops an unfinished frame once, then returns the read error.
func (f *LineFramer) atEnd() ([]byte, error) {
	w := &f.w
	rest := w.buffered()
	w.start, w.end, f.scanned = 0, 0, 0
	if f.skipping {
		f.skipping = false
		return nil, w.err
	}
	if rest > 0 {
		return nil, ErrIncomplete
	}
	return nil, w.err
}

// FixedFramer returns frames of a fixed size. A fixed-size stream has no
// marker to resynchronise on: one lost byte shifts every later frame, so use
// it only where the link does not lose bytes, or with a poll command that
// restarts each response.
type FixedFramer struct {
	w    window
	size int
}

// NewFixedFramer returns a framer reading r in frames of size bytes (> 0).
func NewFixedFramer(r io.Reader, size int) *FixedFramer {
	return &FixedFramer{w: window{r: r, buf: make([]byte, size)}, size: size}
}

// Next returns the next frame; see Framer.
func (f *FixedFramer) Next() ([]byte, error) {
	w := &f.w
	for w.buffered() < f.size {
		if w.fill() == 0 {
			if w.err == nil {
				return nil, nil
			}
			if w.buffered() > 0 {
				w.start, w.end = 0, 0
				return nil, ErrIncomplete
			}
			return nil, w.err
		}
	}
	frame := w.buf[w.start : w.start+f.size]
	w.start += f.size
	return frame, nil
}

// LengthPrefixFramer reads frames that start with their length as an
// unsigned integer of 1, 2 or 4 bytes, big or little endian; the length
// counts the bytes after the prefix.
type LengthPrefixFramer struct {
	w     window
	width int
	order binary.ByteOrder
	max   int
	need  int    // body length of the current frame, or -1 before its prefix
	skip  uint64 // bytes of an oversize frame still to drop
}

// NewLengthPrefixFramer returns a framer reading r whose frames carry a
// width-byte length prefix (1, 2 or 4) in the given byte order, with bodies
// of at most max bytes.
func NewLengthPrefixFramer(r io.Reader, width int, order binary.ByteOrder, max int) *LengthPrefixFramer {
	return &LengthPrefixFramer{w: window{r: r, buf: make([]byte, max+width)}, width: width, order: order, max: max, need: -1}
}

// Next returns the next frame; see Framer.
func (f *LengthPrefixFramer) Next() ([]byte, error) {
	w := &f.w
	for {
		if f.skip > 0 {
			n := uint64(w.buffered())
			if n > f.skip {
				n = f.skip
			}
			w.start += int(n)
			f.skip -= n
			if f.skip > 0 {
				if done, err := f.more(); done {
					return nil, err
				}
				continue
			}
		}
		if f.need < 0 {
			if w.buffered() < f.width {
				if done, err := f.more(); done {
					return nil, err
				}
				continue
			}
			var n uint64
			p := w.buf[w.start : w.start+f.width]
			switch f.width {
			case 1:
				n = uint64(p[0])
			case 2:
				n = uint64(f.order.Uint16(p))
			default:
				n = uint64(f.order.Uint32(p))
			}
			w.start += f.width
			if n > uint64(f.max) {
				f.skip = n
				return nil, ErrOversize
			}
			f.need = int(n)
		}
		if w.buffered() < f.need {
			if done, err := f.more(); done {
				return nil, err
			}
			continue
		}
		frame := w.buf[w.start : w.start+f.need]
		w.start += f.need
		f.need = -1
		return frame, nil
	}
}

// more reads; done reports that Next must return err (nil for a timeout).
func (f *LengthPrefixFramer) more() (done bool, err error) {
	w := &f.w
	if w.fill() > 0 {
		return false, nil
	}
	if w.err == nil {
		return true, nil
	}
	partial := w.buffered() > 0 || f.need >= 0 || f.skip > 0
	w.start, w.end, f.need, f.skip = 0, 0, -1, 0
	if partial {
		return true, ErrIncomplete
	}
	return true, w.err
}
