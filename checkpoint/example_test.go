package checkpoint_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/pspf/pspf-edge/checkpoint"
	"github.com/pspf/pspf-edge/state"
)

// Example shows a runner's side: a Capture hook that pauses the stateful
// operators at a batch boundary, a checkpoint on shutdown, and recovery.
func Example() {
	dir, _ := os.MkdirTemp("", "pipeline")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "state.db")

	// First run.
	db, _ := state.Open(path, state.Options{CacheBytes: 4 << 20})
	counts, _ := db.Table("op2.count", 0)
	var mu sync.Mutex // held while the operators process a batch
	var cursor, outboxEnd uint64
	mgr, _ := checkpoint.New(db, checkpoint.Options{
		Capture: func(ctx context.Context) (checkpoint.Position, func(), error) {
			mu.Lock() // wait for the batch boundary
			return checkpoint.Position{Log: cursor, Outboxes: map[string]uint64{"uplink": outboxEnd}}, mu.Unlock, nil
		},
	})
	for seq := range uint64(3) { // three records, each one batch
		mu.Lock()
		_ = counts.Put([]byte("sensor-1"), []byte{byte(seq + 1)})
		cursor, outboxEnd = seq+1, seq+1
		mu.Unlock()
	}
	cp, _, _ := mgr.Now(context.Background()) // on shutdown
	fmt.Println("checkpoint", cp.Seq, "log", cp.Log)
	_ = db.Close()

	// Recovery.
	db, _ = state.Open(path, state.Options{})
	defer db.Close()
	cp, ok, _ := checkpoint.Load(db)
	counts, _ = db.Table("op2.count", 0)
	v, _, _ := counts.Get([]byte("sensor-1"), nil)
	fmt.Println("found", ok, "cut uplink to", cp.Outboxes["uplink"], "replay from", cp.Log, "count", v[0])
	// Output:
	// checkpoint 1 log 3
	// found true cut uplink to 3 replay from 3 count 3
}
