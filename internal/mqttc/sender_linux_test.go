package mqttc

import (
	"syscall"
	"testing"
)

// BenchmarkAckGroup acks groups of 100 messages (a durable batch at 100
// msg/s: its PUBACKs, written in a loop by one goroutine) and waits for
// the peer to have them, and reports the process's voluntary context
// switches per group: the thread wake-ups a group costs, the peer's read
// included (the same for any sender), and the peer's reads per group (1:
// the group came in one piece).
//
//	go test -run '^$' -bench AckGroup -benchtime 2000x ./internal/mqttc
func BenchmarkAckGroup(b *testing.B) {
	const group = 100
	c, srv := dialTest(b)
	got := make(chan struct{})
	var reads int // the peer's, filled by the reader before each got
	go func() {
		buf := make([]byte, 4*group)
		for {
			for n := 0; n < len(buf); reads++ {
				m, err := srv.Read(buf[n:])
				if err != nil {
					close(got)
					return
				}
				n += m
			}
			got <- struct{}{}
		}
	}()
	p := []byte{0x40, 2, 0, 0}
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	for range b.N {
		for i := range group {
			p[2], p[3] = byte(i>>8), byte(i)
			if _, err := c.Write(p); err != nil {
				b.Fatal(err)
			}
		}
		if _, ok := <-got; !ok {
			b.Fatal("peer ended")
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	b.ReportMetric(float64(after.Nvcsw-before.Nvcsw)/float64(b.N), "ctxsw/group")
	b.ReportMetric(float64(reads)/float64(b.N), "peer-reads/group")
}
