package kafka

import (
	"bytes"
	"io"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLZ4Compressor checks that a batch comes back intact, in an lz4 frame
// of 64 KiB blocks, also when the pooled writer is reused.
func TestLZ4Compressor(t *testing.T) {
	c := newLZ4Compressor()
	for i, n := range []int{0, 100, 200_000, 3 << 20} {
		src := make([]byte, n)
		for j := range src {
			src[j] = byte(j*7 + j/300)
		}
		var dst bytes.Buffer
		out, codec := c.Compress(&dst, src)
		if codec != kgo.CodecLz4 {
			t.Fatalf("%d bytes: codec %v, want lz4", n, codec)
		}
		if len(out) < 6 {
			t.Fatalf("%d bytes: frame of %d bytes", n, len(out))
		}
		// Frame descriptor: magic, FLG, BD; BD bits 6-4 are the block size (4: 64 KiB).
		if bs := out[5] >> 4 & 7; bs != 4 {
			t.Errorf("%d bytes: block size code %d, want 4 (64 KiB)", n, bs)
		}
		got, err := io.ReadAll(lz4.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("%d bytes (#%d): decompress: %v", n, i, err)
		}
		if !bytes.Equal(got, src) {
			t.Errorf("%d bytes: got %d bytes back, not the same", n, len(got))
		}
	}
}
