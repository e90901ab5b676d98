package buffer_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/pspf/pspf-edge/buffer"
)

// A pipeline appends a batch, acks its source once Sync says it is
// durable, and a sink reads through its own cursor and acks what the
// destination accepted.
func Example() {
	dir, _ := os.MkdirTemp("", "buffer-example-")
	defer os.RemoveAll(dir)
	l, err := buffer.Open(dir, buffer.Options{Sync: buffer.SyncBatch})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()

	last, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Sync(ctx, last); err != nil {
		log.Fatal(err) // do not ack the source: it redelivers
	}
	// ... ack the source here.

	sink, _ := l.Reader("uplink")
	recs, err := sink.Read(ctx, make([]buffer.Record, 0, 64), 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Printf("%d %s\n", r.Seq, r.Payload) // Payload is valid until the next Read
	}
	sink.Ack(recs[len(recs)-1].Seq) // after the destination accepted them
	// Output:
	// 1 a
	// 2 b
}
