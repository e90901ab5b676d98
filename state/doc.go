// Package state is the keyed operator state of one pipeline: one table per
// stateful operator, checkpointed together with the pipeline-log position
// it reflects. Store is the interface the runner and package checkpoint
// use; two stores implement it and pass one shared test suite:
//
//   - DB (Open): one bbolt file (conventionally state.db in the pipeline's
//     data directory), fronted by an in-memory write-back cache under a
//     byte budget. Everything below describes it unless it says otherwise.
//   - Memory (NewMemory): the tables in RAM only, under the same byte
//     budget as a hard bound; a checkpoint writes nothing, and the state
//     ends with the process. See Memory.
//
// # Write-back and checkpoints
//
// Put and Delete only change the cache: the entry becomes dirty and stays in
// memory until a checkpoint. A checkpoint ([DB.Checkpoint], or
// [DB.Prepare] followed by [Pending.Commit]) writes every dirty entry of every
// table, the TTL expiries that are due, and the caller's metadata in ONE bbolt
// transaction, so the file always holds the state as of exactly one
// checkpoint: changes made after the last committed checkpoint never reach
// the disk, whatever happens to the process. The bytes a checkpoint writes
// grow with the number of changed keys, not with the number of keys.
//
// # Memory budget
//
// Options.CacheBytes bounds the cache. Every cached entry is charged its key,
// the capacity of its value buffer and a fixed per-entry overhead
// ([EntryOverhead]) that covers the map slot and bookkeeping, so the charge
// tracks the real heap use. Clean entries (equal to the file) are evicted in
// least-recently-used order when the charge is over the budget and are read
// back from the file on demand. Dirty entries cannot be evicted: writing them
// to the file outside a checkpoint would break the atomicity above. When the
// dirty entries alone exceed half of the budget, [DB.Pressure] is signalled so
// that the checkpoint manager checkpoints early; until that checkpoint has
// committed, the cache may exceed the budget by the dirty bytes, and
// [DB.Stats] reports it. Memory is therefore bounded by the budget plus what
// the operators change between two checkpoints.
//
// A commit also needs transient memory outside the budget: bbolt copies on
// write, so it holds one page buffer (4 KiB) per page it rewrites, about
// one per changed key when the changed keys are scattered, far fewer when
// they are clustered, until the commit ends (bbolt then keeps the buffers in
// a sync.Pool until the next GC cycles). Size the budget with that in mind:
// 2 MiB of budget lets about 7k small dirty keys accumulate, whose commit may
// hold up to about 28 MiB of page buffers for a moment.
//
// # TTL
//
// A table opened with a TTL stores each key's last-write time on the state
// clock with its value. A key not written for the TTL is absent to Get and
// Range at once, and is deleted from the file by the next checkpoint, in the
// same transaction, through a time index kept beside the table.
//
// The state clock counts the time the DB has been open: it starts at the
// time of the last checkpoint in the file (the wall clock, for a new file)
// and advances with the monotonic clock (Options.Now's Time.Sub), and each
// checkpoint records it. A wall clock that jumps, as on a board without an
// RTC when NTP first syncs, moves it neither while the DB is open nor across
// a restart, so keys never expire early; time while the agent is stopped does
// not count, so keys may outlive their TTL by that time. TTL is for garbage
// collection: operators that need event-time expiry keep the time in the
// value and compare it themselves.
//
// # Recovery contract
//
// The file is the truth. On restart: open the DB, load the last checkpoint's
// metadata ([DB.LastCheckpoint]; package checkpoint decodes the log cursor and
// the outbox end positions from it), cut each outbox back to its recorded end,
// and replay the pipeline log from the recorded cursor through the stateful
// operators. Since the state reflects exactly that checkpoint, every record
// after the cursor is applied exactly once.
//
// # Damage
//
// Open reads the file through once and checks its structure before bbolt
// maps it (verify.go), so that a damaged file makes Open fail with
// ErrCorrupt rather than panic, crash the process or hang it; a call that
// meets damage later, while the file is in use, fails with ErrCorrupt too,
// the DB refuses to checkpoint from then on, and Close leaves a note so
// that the next Open fails the same way. The caller then moves the file
// aside (MoveAside keeps the MaxAside newest copies) and starts from an
// empty one.
//
// bbolt keeps no checksum of its data, so every stored value carries its
// own: a CRC-32C of its key, its write time and its bytes (value.go has
// the layout and why CRC-32C). It is written by the checkpoint that writes
// the value and checked wherever a value is read from the file: by Open's
// and Check's read through the file (which name the table and key), a Get
// that misses the cache, Range's reads of the file, the checkpoint that
// overwrites a key it has not read or expires a key, and the TTL index
// built when a table first opens with a TTL. A flipped byte in a value or
// its header therefore ends as ErrCorrupt, never as a wrong value. A
// flipped key byte is caught the same way when the file is read through
// (Open, Check) or the entry is read (Range, expiry); while the DB is
// open, until then, Get does not find that key, and a checkpoint writing
// keys into a page whose key order the flip broke may leave bbolt's search
// finding an older version of a key. A file written before checksums opens
// and reads as it is: its values gain their checksum when they are next
// written, and until then are not checked; a version before checksums
// cannot read a file written since (move it aside first). A value without
// checksum is accepted only if written no later than the file's last
// checkpoint before checksums began (recorded in the file by the first
// checkpoint after): in a file created with checksums, a flip that clears a
// value's marker is caught; in an upgraded file, it is missed when the
// flipped byte (the header's first) also gives a write time at or before
// that checkpoint: 24 of the 255 other values that byte can take in 2026
// (a single flipped bit never does: the marker bit leaves the write time,
// later than the bound, and any other bit is the checksum's to catch).
// The flip of a single byte in the record of that bound, in a file created
// with checksums, widens it (no wrong value; a second flip could then pass
// as above). Damage the checksum misses: one chance in 2^32 for damage
// wider than 32 bits.
//
// # Concurrency
//
// A DB and its tables are safe for concurrent use; one mutex guards the cache,
// so calls are short and serialised. Cache misses read the file while holding
// it. A checkpoint holds the mutex only while it collects the dirty entries
// (Prepare) and while it marks them clean after the commit; the bbolt commit
// itself runs without it, so operators keep running during the fsync.
package state
