package kafka

import (
	"errors"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestLivenessHolds: a JoinGroup or SyncGroup the coordinator holds is not
// silence until the rebalance timeout; any other request unanswered, a
// fetch too, is silence from its write, and so is a refused dial while a
// JoinGroup is held: a hung or stopped broker is reported after
// unreachable_after as before.
func TestLivenessHolds(t *testing.T) {
	const after = time.Second
	write := func(l *liveness, key kmsg.Key) {
		l.WroteNow()
		l.OnBrokerWrite(kgo.BrokerMetadata{}, key.Int16(), 100, 0, 0, nil)
	}
	for _, tc := range []struct {
		name     string
		do       func(l *liveness)
		wait     time.Duration
		gone     bool
		hasCause bool
	}{
		{"join held", func(l *liveness) { write(l, kmsg.JoinGroup) }, 30 * time.Second, false, false},
		{"sync held", func(l *liveness) { write(l, kmsg.SyncGroup) }, 30 * time.Second, false, false},
		{"join past the rebalance timeout", func(l *liveness) { write(l, kmsg.JoinGroup) }, time.Minute + after, true, false},
		{"fetch unanswered", func(l *liveness) { write(l, kmsg.Fetch) }, after, true, false},
		{"metadata unanswered while a join is held", func(l *liveness) {
			write(l, kmsg.JoinGroup)
			time.Sleep(10 * time.Second)
			write(l, kmsg.Metadata)
		}, after, true, false},
		{"dial refused while a join is held", func(l *liveness) {
			write(l, kmsg.JoinGroup)
			l.Failed(syscall.ECONNREFUSED)
		}, after, true, true},
		{"join write failed", func(l *liveness) {
			l.OnBrokerWrite(kgo.BrokerMetadata{}, kmsg.JoinGroup.Int16(), 0, 0, 0, errors.New("broken pipe"))
		}, after, true, false},
		{"answered", func(l *liveness) { write(l, kmsg.Metadata); l.ReadNow() }, time.Minute, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &liveness{groupHold: time.Minute}
				l.reset()
				tc.do(l)
				time.Sleep(tc.wait - time.Millisecond)
				if gone, _ := l.unreachable(after); gone {
					t.Fatalf("unreachable %s early", time.Millisecond)
				}
				time.Sleep(time.Millisecond)
				gone, cause := l.unreachable(after)
				if gone != tc.gone || (cause != nil) != tc.hasCause {
					t.Fatalf("after %s: unreachable %v (cause %v), want %v (cause %v)", tc.wait, gone, cause, tc.gone, tc.hasCause)
				}
			})
		})
	}
}
