package agent

import (
	"context"
	"sync"
)

// Unacked is the ack bookkeeping of a source that cannot replay what it has
// read (a GPIO pin, a serial line, a simulation): it bounds the batches handed
// out and not yet acked, and keeps each nacked batch in memory so that the
// next Read hands it out again, before anything new. Build it with
// NewUnacked; it starts no goroutines.
//
// A Read holds a slot from Acquire until it returns: with a batch and the
// AckFunc from Ack (the ack gives the slot back), or with nothing after
// Release. Acquire, Release, Ack and Drain are called from the Read goroutine;
// the AckFuncs may be called from any goroutine. Batches still held for
// redelivery when the source closes are lost with it.
type Unacked struct {
	slots       chan struct{} // one per batch handed out and not yet acked
	acked       chan struct{} // signalled after each ack, for Drain
	mu          sync.Mutex
	redo        [][]Record // nacked batches, oldest first
	redelivered *Counter
}

// NewUnacked returns an Unacked that lets n batches (at least 1) be unacked
// at once. Each record of a nacked batch adds one to redelivered, unless it
// is nil.
func NewUnacked(n int, redelivered *Counter) *Unacked {
	return &Unacked{slots: make(chan struct{}, max(n, 1)), acked: make(chan struct{}, 1), redelivered: redelivered}
}

// Acquire waits until fewer than n batches are unacked and takes a slot
// for the caller's next batch, or returns ctx.Err() without one. If a nacked
// batch waits, it returns that batch with its AckFunc, to be handed out as
// it is. Otherwise it returns nil: the caller hands out a new batch with
// Ack's AckFunc, or gives the slot back with Release.
func (u *Unacked) Acquire(ctx context.Context) ([]Record, AckFunc, error) {
	select {
	case u.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if b := u.popRedo(); b != nil {
		return b, u.Ack(b), nil
	}
	return nil, nil, nil
}

// Release gives back the slot taken by Acquire when Read returns no batch.
func (u *Unacked) Release() { <-u.slots }

// Ack returns the AckFunc of batch b, handed out under a slot from Acquire.
// Its first call gives the slot back; with an error it first queues b to be
// handed out again. Later calls do nothing.
func (u *Unacked) Ack(b []Record) AckFunc {
	var once sync.Once
	return func(_ context.Context, err error) {
		once.Do(func() {
			if err != nil {
				u.mu.Lock()
				u.redo = append(u.redo, b)
				u.mu.Unlock()
				if u.redelivered != nil {
					u.redelivered.Add(len(b))
				}
			}
			<-u.slots
			select {
			case u.acked <- struct{}{}:
			default:
			}
		})
	}
}

// Drain is for a source with nothing new to send, such as a finite one at
// its end; the caller holds no slot. It waits until a nacked batch is back
// and returns it under a new slot with its AckFunc, or until every batch is
// acked and none waits, when it returns nil, nil, nil. It returns ctx.Err()
// if ctx ends first.
func (u *Unacked) Drain(ctx context.Context) ([]Record, AckFunc, error) {
	for {
		u.mu.Lock()
		// An AckFunc queues its batch before it gives back the slot, so an
		// empty queue and no slot held, seen together, mean nothing is left.
		b, idle := u.popRedoLocked(), len(u.slots) == 0
		u.mu.Unlock()
		if b != nil {
			select {
			case u.slots <- struct{}{}:
				return b, u.Ack(b), nil
			case <-ctx.Done():
				u.pushFront(b)
				return nil, nil, ctx.Err()
			}
		}
		if idle {
			return nil, nil, nil
		}
		select {
		case <-u.acked:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

func (u *Unacked) popRedo() []Record {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.popRedoLocked()
}

func (u *Unacked) popRedoLocked() []Record {
	if len(u.redo) == 0 {
		return nil
	}
	b := u.redo[0]
	u.redo[0] = nil
	u.redo = u.redo[1:]
	return b
}

func (u *Unacked) pushFront(b []Record) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.redo = append([][]Record{b}, u.redo...)
}
