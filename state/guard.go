package state

import (
	"errors"
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// bbolt panics when it meets a damaged page, and a page past the end of a
// truncated file faults. The agent must never crash-loop on a damaged file,
// so every call into bbolt goes through guard, which turns both into an
// error wrapping ErrCorrupt that the runner can act on (move the file aside,
// start empty, replay). bbolt releases its locks while the panic unwinds.
//
// The freelist is synced to the file rather than rebuilt on open: rebuilding
// walks the tree in a goroutine of bbolt's own, where a panic cannot be
// recovered.

// guard is deferred as `defer guard(&err)()`.
func guard(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			*err = fmt.Errorf("bbolt: %v: %w", r, ErrCorrupt)
		}
	}
}

// view runs fn in a guarded bbolt read transaction.
func (db *DB) view(fn func(*bolt.Tx) error) (err error) {
	defer db.noteDamage(&err)
	defer guard(&err)()
	return db.bolt.View(fn)
}

// update runs fn in a guarded bbolt write transaction.
func (db *DB) update(fn func(*bolt.Tx) error) (err error) {
	defer db.noteDamage(&err)
	defer guard(&err)()
	return db.bolt.Update(fn)
}

// noteDamage records the first error wrapping ErrCorrupt as the DB's
// damage (see DB.Damaged). It takes no lock: callers may hold db.mu.
func (db *DB) noteDamage(err *error) {
	if *err != nil && errors.Is(*err, ErrCorrupt) {
		e := *err
		db.damaged.CompareAndSwap(nil, &e)
	}
}
