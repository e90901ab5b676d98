package mqttc

import (
	"context"
	"errors"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// KeepSetUp sets up every connection that kick announces until ctx ends:
// it runs try (fresh on the first try on a connection) until it returns
// nil, then ok. A failure other than the connection ending (ErrNotConnected,
// ErrConnEnded: the next connection kicks) goes to failed with the wait
// before the next try, a backoff of bo on the same connection (an ACL
// fixed meanwhile takes effect without waiting for the connection to
// drop), or at once, fresh, on a new connection. try runs on the caller's
// goroutine; ok does not run once ctx has ended.
func KeepSetUp(ctx context.Context, kick <-chan struct{}, bo agent.Backoff, try func(fresh bool) error, ok func(), failed func(err error, wait time.Duration)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		bo.Reset()
		for fresh := true; ; {
			err := try(fresh)
			fresh = false
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				ok()
				break
			}
			if errors.Is(err, ErrNotConnected) || errors.Is(err, ErrConnEnded) {
				break
			}
			wait := bo.Next()
			failed(err, wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-kick: // a new connection: set it up now
				bo.Reset()
				fresh = true
			case <-t.C: // the same connection: again
			}
			t.Stop()
		}
	}
}
