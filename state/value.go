package state

import (
	"encoding/binary"
	"hash/crc32"
)

// A stored value is its header followed by the operator's bytes:
//
//	write time  8 bytes  big-endian state-clock nanoseconds, top bit set (sumFlag)
//	checksum    4 bytes  big-endian CRC-32C (Castagnoli) of the key, the
//	                     8 bytes above and the operator's bytes
//	value       the rest
//
// bbolt keeps no checksum of its data, so a byte flipped inside a value,
// whose page still parses, would reach the operator as a wrong aggregate or
// window. CRC-32C detects every burst of up to 32 flipped bits (so every
// flip within one byte), every error of up to 3 bits in values of the sizes
// allowed here, and other damage but for one chance in 2^32; it covers the
// key too, so that a flipped key byte that keeps the page's key order does
// not move a value to another key. Go computes it with the CPU's CRC
// instruction on amd64 and arm64.
//
// Files written before checksums (legacyHdr: the 8-byte write time only,
// top bit clear, the state clock being far below 2^63) still open: such a
// value is read as it is, without a check, and gains its checksum when it
// is next written. No pass rewrites the file. A value with the top bit
// clear is accepted only if it is written no later than the file's legacy
// bound (legacyBound): 0 in a file created with checksums, where every
// unmarked value is damage, and the last checkpoint's time in a file
// written before them. A flip that clears the marker of a checksummed
// value is therefore caught in a new file, and in an old one unless the
// flipped byte also yields a write time at or before that bound.
const (
	// hdr is the header of a value with its checksum, also the layout of
	// every cached value (entry.val).
	hdr = 12
	// legacyHdr is the header of a value written without a checksum.
	legacyHdr = 8
	// sumFlag marks a write time followed by a checksum.
	sumFlag = uint64(1) << 63
)

// castagnoli is the CRC-32C table (read-only after init).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// wtimeOf returns the write time in the header of a value (either layout).
func wtimeOf(v []byte) int64 { return int64(binary.BigEndian.Uint64(v) &^ sumFlag) }

// putHeader writes the write time of a checksummed value into v[:8].
func putHeader(v []byte, wtime int64) { binary.BigEndian.PutUint64(v, uint64(wtime)|sumFlag) }

// valueSum is the checksum of the value v (hdr layout) stored under key k.
func valueSum(k, v []byte) uint32 {
	c := crc32.Update(0, castagnoli, k)
	c = crc32.Update(c, castagnoli, v[:8])
	return crc32.Update(c, castagnoli, v[hdr:])
}

// seal writes the checksum of v (hdr layout) under key k into its header.
func seal(k, v []byte) { binary.BigEndian.PutUint32(v[8:hdr], valueSum(k, v)) }

// checkStored checks a value v read from the file under key k and returns
// its write time, the operator's bytes and whether it has no checksum (a
// value written before them). bound is the file's legacy bound (see
// above). Damage is an error wrapping ErrCorrupt.
func checkStored(k, v []byte, bound int64) (wtime int64, body []byte, legacy bool, err error) {
	switch {
	case len(v) < legacyHdr:
		return 0, nil, false, corruptf("key %s: stored value is %d bytes, shorter than its header", showKey(k), len(v))
	case binary.BigEndian.Uint64(v)&sumFlag == 0:
		wtime = wtimeOf(v)
		if bound <= 0 || wtime > bound {
			return 0, nil, false, corruptf("key %s: stored value has no checksum, but was written after checksums began (write time %d, bound %d)", showKey(k), wtime, bound)
		}
		return wtime, v[legacyHdr:], true, nil
	case len(v) < hdr:
		return 0, nil, false, corruptf("key %s: stored value is %d bytes, shorter than its header", showKey(k), len(v))
	case binary.BigEndian.Uint32(v[8:hdr]) != valueSum(k, v):
		return 0, nil, false, corruptf("key %s: stored value fails its checksum", showKey(k))
	}
	return wtimeOf(v), v[hdr:], false, nil
}

// appendCached appends to dst the cached form (hdr layout) of a value that
// checkStored accepted: v itself when it has a checksum, else its write
// time and body with a zero checksum (seal fills it in when it is written).
func appendCached(dst, v []byte, wtime int64, body []byte, legacy bool) []byte {
	if !legacy {
		return append(dst, v...)
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(wtime)|sumFlag)
	dst = append(dst, 0, 0, 0, 0)
	return append(dst, body...)
}
