package window

import (
	"encoding/binary"
	"math"

	"github.com/pspf/pspf-edge/agent"
)

// fn is an aggregate function.
type fn uint8

const (
	fnCount fn = iota + 1
	fnSum
	fnMin
	fnMax
	fnMean
	fnFirst
	fnLast
	fnStddev
	fnP50
	fnP90
	fnP99
	fnRate
	fnDelta
)

var fnNames = map[string]fn{
	"count": fnCount, "sum": fnSum, "min": fnMin, "max": fnMax, "mean": fnMean,
	"first": fnFirst, "last": fnLast, "stddev": fnStddev,
	"p50": fnP50, "p90": fnP90, "p99": fnP99, "rate": fnRate, "delta": fnDelta,
}

func (f fn) quantile() float64 {
	switch f {
	case fnP50:
		return 0.5
	case fnP90:
		return 0.9
	case fnP99:
		return 0.99
	}
	return -1
}

// aggState is the running state of one aggregate in one window: a fixed
// struct, so that updating it allocates nothing. Mean and variance use
// Welford's update (and Chan's formula to merge); first and last are by event
// time; delta sums the increases between consecutive samples in arrival
// order, a decrease being a counter reset (the new value is the increase since
// the reset).
type aggState struct {
	n             int64
	sum           float64
	min, max      float64
	mean, m2      float64
	first, last   float64
	firstT, lastT int64
	prev          float64 // last value in arrival order (counters)
	inc           float64 // counter increase
	sk            *sketch // quantiles only
}

func (a *aggState) reset() {
	sk := a.sk
	*a = aggState{}
	if sk != nil {
		sk.reset()
		a.sk = sk
	}
}

func (a *aggState) add(f fn, v float64, t int64) {
	a.n++
	if a.n == 1 {
		a.sum, a.min, a.max, a.mean, a.m2 = v, v, v, v, 0
		a.first, a.last, a.firstT, a.lastT, a.prev, a.inc = v, v, t, t, v, 0
	} else {
		a.sum += v
		a.min = math.Min(a.min, v)
		a.max = math.Max(a.max, v)
		d := v - a.mean
		a.mean += d / float64(a.n)
		a.m2 += d * (v - a.mean)
		if t < a.firstT {
			a.first, a.firstT = v, t
		}
		if t >= a.lastT {
			a.last, a.lastT = v, t
		}
		a.inc += increase(a.prev, v)
		a.prev = v
	}
	if q := f.quantile(); q >= 0 {
		if a.sk == nil {
			a.sk = &sketch{}
		}
		a.sk.add(v)
	}
}

// increase is what a monotonic counter gained from prev to v: a drop is a
// reset to zero followed by v.
func increase(prev, v float64) float64 {
	if v >= prev {
		return v - prev
	}
	return v
}

// merge folds o, a window that follows a in time, into a (session merges).
func (a *aggState) merge(o *aggState) {
	if o.n == 0 {
		return
	}
	if a.n == 0 {
		sk := a.sk
		*a = *o
		a.sk = sk
		if o.sk != nil {
			if a.sk == nil {
				a.sk = &sketch{}
			}
			a.sk.reset()
			a.sk.merge(o.sk)
		}
		return
	}
	n := a.n + o.n
	d := o.mean - a.mean
	a.m2 += o.m2 + d*d*float64(a.n)*float64(o.n)/float64(n)
	a.mean += d * float64(o.n) / float64(n)
	a.n = n
	a.sum += o.sum
	a.min = math.Min(a.min, o.min)
	a.max = math.Max(a.max, o.max)
	if o.firstT < a.firstT {
		a.first, a.firstT = o.first, o.firstT
	}
	if o.lastT >= a.lastT {
		a.last, a.lastT = o.last, o.lastT
	}
	a.inc += increase(a.prev, o.first) + o.inc
	a.prev = o.prev
	if o.sk != nil {
		if a.sk == nil {
			a.sk = &sketch{}
		}
		a.sk.merge(o.sk)
	}
}

// result returns the aggregate's value as a field; ok is false when the
// window saw no value for it (the field is then left out).
func (a *aggState) result(f fn, name string) (agent.Field, bool) {
	if f == fnCount {
		return agent.Int(name, a.n), true
	}
	if a.n == 0 {
		return agent.Field{}, false
	}
	switch f {
	case fnSum:
		return agent.Float(name, a.sum), true
	case fnMin:
		return agent.Float(name, a.min), true
	case fnMax:
		return agent.Float(name, a.max), true
	case fnMean:
		return agent.Float(name, a.mean), true
	case fnFirst:
		return agent.Float(name, a.first), true
	case fnLast:
		return agent.Float(name, a.last), true
	case fnStddev:
		if a.n < 2 {
			return agent.Float(name, 0), true
		}
		return agent.Float(name, math.Sqrt(a.m2/float64(a.n-1))), true
	case fnP50, fnP90, fnP99:
		if a.sk == nil {
			return agent.Field{}, false
		}
		v, ok := a.sk.quantile(f.quantile())
		return agent.Float(name, v), ok
	case fnDelta:
		return agent.Float(name, a.inc), true
	case fnRate:
		if a.lastT <= a.firstT {
			return agent.Field{}, false
		}
		return agent.Float(name, a.inc/(float64(a.lastT-a.firstT)/1e9)), true
	}
	return agent.Field{}, false
}

func (a *aggState) bytes() int {
	n := 112
	if a.sk != nil {
		n += a.sk.bytes()
	}
	return n
}

func appendF64(dst []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// Parts of an aggState that a key entry stores: the compact encoding
// (keyVersion 2) keeps only what the function's result, its later updates
// and session merges read, so a mean stores one float, not nine.
const (
	partSum uint16 = 1 << iota
	partMin
	partMax
	partMean
	partM2
	partFirst // first and firstT
	partLast  // last and lastT
	partPrev
	partInc
	partSpan // firstT and lastT (rate)
	partAll  = 1<<iota - 1
)

// parts returns the parts of the state f needs.
func (f fn) parts() uint16 {
	switch f {
	case fnSum:
		return partSum
	case fnMin:
		return partMin
	case fnMax:
		return partMax
	case fnMean:
		return partMean
	case fnStddev:
		return partMean | partM2
	case fnFirst:
		return partFirst
	case fnLast:
		return partLast
	case fnDelta: // merges read first; first follows firstT
		return partFirst | partPrev | partInc
	case fnRate:
		return partFirst | partPrev | partInc | partSpan
	}
	return 0 // count and the quantiles (their sketch is stored apart)
}

// appendTo appends the parts of the state that f needs (keyVersion 2).
func (a *aggState) appendTo(dst []byte, f fn) []byte {
	dst = binary.AppendVarint(dst, a.n)
	if a.n == 0 {
		return dst
	}
	p := f.parts()
	if p&partSum != 0 {
		dst = appendF64(dst, a.sum)
	}
	if p&partMin != 0 {
		dst = appendF64(dst, a.min)
	}
	if p&partMax != 0 {
		dst = appendF64(dst, a.max)
	}
	if p&partMean != 0 {
		dst = appendF64(dst, a.mean)
	}
	if p&partM2 != 0 {
		dst = appendF64(dst, a.m2)
	}
	if p&partFirst != 0 {
		dst = appendF64(dst, a.first)
	}
	if p&partLast != 0 {
		dst = appendF64(dst, a.last)
	}
	if p&partPrev != 0 {
		dst = appendF64(dst, a.prev)
	}
	if p&partInc != 0 {
		dst = appendF64(dst, a.inc)
	}
	if p&(partFirst|partSpan) != 0 {
		dst = binary.AppendVarint(dst, a.firstT)
	}
	if p&(partLast|partSpan) != 0 {
		dst = binary.AppendVarint(dst, a.lastT)
	}
	if a.sk == nil {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(a.sk.zero))
	dst = a.sk.pos.appendTo(dst)
	return a.sk.neg.appendTo(dst)
}

// read reads a state written by appendTo for f, or, with version 1, the
// full state every aggregate used to store.
func (a *aggState) read(d *decoder, f fn, version byte) {
	a.reset()
	a.n = d.varint()
	if a.n == 0 {
		return
	}
	p := f.parts()
	if version < 2 {
		p = partAll
		for _, v := range [...]*float64{&a.sum, &a.min, &a.max, &a.mean, &a.m2, &a.first, &a.last, &a.prev, &a.inc} {
			*v = d.f64()
		}
	} else {
		for _, x := range [...]struct {
			part uint16
			v    *float64
		}{{partSum, &a.sum}, {partMin, &a.min}, {partMax, &a.max}, {partMean, &a.mean}, {partM2, &a.m2},
			{partFirst, &a.first}, {partLast, &a.last}, {partPrev, &a.prev}, {partInc, &a.inc}} {
			if p&x.part != 0 {
				*x.v = d.f64()
			}
		}
	}
	if p&(partFirst|partSpan) != 0 {
		a.firstT = d.varint()
	}
	if p&(partLast|partSpan) != 0 {
		a.lastT = d.varint()
	}
	if d.byte() == 1 {
		if a.sk == nil {
			a.sk = &sketch{}
		}
		a.sk.zero = int64(d.uvarint())
		a.sk.pos.read(d)
		a.sk.neg.read(d)
	}
}

// decoder reads the state encoding; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) f64() float64 {
	if len(d.b) < 8 {
		d.err = errShort
		d.b = nil
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.err = errShort
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}
