package kafka

import (
	"bytes"
	"sync"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lz4Compressor compresses produce batches with lz4 in 64 KiB blocks, as
// Kafka's own producer does. franz-go's default lz4 writer uses 4 MiB
// blocks, whose pooled buffers are far larger than batches of a few hundred
// KiB at most (the README has the measurement).
type lz4Compressor struct{ pool sync.Pool }

func newLZ4Compressor() *lz4Compressor {
	c := &lz4Compressor{}
	c.pool.New = func() any {
		w := lz4.NewWriter(nil)
		// Block64Kb is a valid option: Apply cannot fail with it.
		_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
		return w
	}
	return c
}

// Compress implements kgo.Compressor: src as one lz4 frame in dst.
func (c *lz4Compressor) Compress(dst *bytes.Buffer, src []byte, _ ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	w := c.pool.Get().(*lz4.Writer)
	defer c.pool.Put(w)
	w.Reset(dst)
	if _, err := w.Write(src); err != nil {
		return nil, kgo.CodecError
	}
	if err := w.Close(); err != nil {
		return nil, kgo.CodecError
	}
	return dst.Bytes(), kgo.CodecLz4
}
