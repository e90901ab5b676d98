package window

import (
	"encoding/binary"
	"errors"
	"math"
)

// sketch estimates quantiles with a bounded relative error, in the manner of
// DDSketch (Masson, Rim, Lee, VLDB 2019): a value v > 0 falls in bucket
// ceil(log_γ v) with γ = (1+α)/(1−α), and a bucket is reported as
// 2γ^i/(γ+1), which is within a factor (1±α) of every value in it. Negative
// values use a mirrored set of buckets; zeros (and |v| below minValue) are
// counted apart. Sketches merge exactly by adding bucket counts, so session
// merges keep the bound.
//
// Error bound: with α = 1%, a reported quantile q is within 1% (relative) of
// the value of rank ceil(q·n) (nearest rank) — as long as the buckets were not
// collapsed. Each side holds at most maxBins contiguous buckets (8 KiB): a
// range of γ^2048 ≈ 10^17.7 between the smallest and the largest magnitude.
// Beyond that the lowest buckets are folded into one, and only quantiles that
// fall among those smallest magnitudes lose the bound.
type sketch struct {
	zero int64
	pos  bins
	neg  bins
}

const (
	sketchAlpha = 0.01
	maxBins     = 2048
	minValue    = 1e-9 // magnitudes below count as zero
)

var (
	gamma    = (1 + sketchAlpha) / (1 - sketchAlpha)
	logGamma = math.Log(gamma)
)

// bins are contiguous bucket counts: c[j] counts bucket lo+j.
type bins struct {
	lo int32
	c  []uint32
}

func (b *bins) add(i int32, n uint32) {
	if len(b.c) == 0 {
		b.lo = i
		b.c = append(b.c[:0], n)
		return
	}
	if i < b.lo {
		grow := int(b.lo - i)
		if len(b.c)+grow > maxBins {
			// Fold: everything below the window's low end goes into lo.
			grow = maxBins - len(b.c)
			if grow <= 0 {
				b.c[0] += n
				return
			}
			i = b.lo - int32(grow)
		}
		b.c = append(b.c, make([]uint32, grow)...)
		copy(b.c[grow:], b.c[:len(b.c)-grow])
		clear(b.c[:grow])
		b.lo = i
		b.c[0] += n
		return
	}
	j := int(i - b.lo)
	if j >= len(b.c) {
		if j >= maxBins {
			// Collapse the lowest buckets so that the highest fits.
			shift := j - maxBins + 1
			if shift >= len(b.c) {
				var total uint32
				for _, c := range b.c {
					total += c
				}
				b.c = append(b.c[:0], total)
				b.lo = i - int32(maxBins-1)
				j = maxBins - 1
				b.c = append(b.c, make([]uint32, j)...)
				b.c[j] += n
				return
			}
			var folded uint32
			for _, c := range b.c[:shift+1] {
				folded += c
			}
			b.c = append(b.c[:0], b.c[shift:]...)
			b.c[0] = folded
			b.lo += int32(shift)
			j -= shift
		}
		b.c = append(b.c, make([]uint32, j-len(b.c)+1)...)
	}
	b.c[j] += n
}

func bucket(v float64) int32 { return int32(math.Ceil(math.Log(v) / logGamma)) }

func bucketValue(i int32) float64 { return 2 * math.Pow(gamma, float64(i)) / (gamma + 1) }

func (s *sketch) add(v float64) {
	switch {
	case v > minValue:
		s.pos.add(bucket(v), 1)
	case v < -minValue:
		s.neg.add(bucket(-v), 1)
	default:
		s.zero++
	}
}

func (s *sketch) count() int64 {
	n := s.zero
	for _, c := range s.pos.c {
		n += int64(c)
	}
	for _, c := range s.neg.c {
		n += int64(c)
	}
	return n
}

// quantile returns the estimate of the q-quantile (0 <= q <= 1), by the
// nearest-rank definition: the value of rank ceil(q·n) in ascending order.
func (s *sketch) quantile(q float64) (float64, bool) {
	n := s.count()
	if n == 0 {
		return 0, false
	}
	rank := max(int64(math.Ceil(q*float64(n)))-1, 0)
	var seen int64
	for j := len(s.neg.c) - 1; j >= 0; j-- {
		seen += int64(s.neg.c[j])
		if seen > rank {
			return -bucketValue(s.neg.lo + int32(j)), true
		}
	}
	seen += s.zero
	if seen > rank {
		return 0, true
	}
	for j, c := range s.pos.c {
		seen += int64(c)
		if seen > rank {
			return bucketValue(s.pos.lo + int32(j)), true
		}
	}
	return bucketValue(s.pos.lo + int32(len(s.pos.c)-1)), true
}

func (s *sketch) merge(o *sketch) {
	s.zero += o.zero
	for j, c := range o.pos.c {
		if c > 0 {
			s.pos.add(o.pos.lo+int32(j), c)
		}
	}
	for j, c := range o.neg.c {
		if c > 0 {
			s.neg.add(o.neg.lo+int32(j), c)
		}
	}
}

func (s *sketch) reset() {
	s.zero = 0
	s.pos.c = s.pos.c[:0]
	s.neg.c = s.neg.c[:0]
}

func (s *sketch) bytes() int { return 64 + 4*(cap(s.pos.c)+cap(s.neg.c)) }

func (b *bins) appendTo(dst []byte) []byte {
	dst = binary.AppendVarint(dst, int64(b.lo))
	dst = binary.AppendUvarint(dst, uint64(len(b.c)))
	for _, c := range b.c {
		dst = binary.AppendUvarint(dst, uint64(c))
	}
	return dst
}

var errShort = errors.New("window: state value is truncated")

func (b *bins) read(d *decoder) {
	b.lo = int32(d.varint())
	n := d.uvarint()
	if n > maxBins {
		d.err = errShort
		return
	}
	b.c = b.c[:0]
	for range n {
		b.c = append(b.c, uint32(d.uvarint()))
	}
}
