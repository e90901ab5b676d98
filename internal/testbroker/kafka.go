package testbroker

import (
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process kfake cluster of one broker (or more, with
// StartKafkaBrokers) on fixed loopback ports, persisting to a temporary
// directory, so that Stop and Start simulate an outage of the uplink
// without losing what the cluster had accepted.
type Kafka struct {
	t     testing.TB
	opts  []kfake.Opt
	ports []int
	dir   string

	mu sync.Mutex
	c  *kfake.Cluster
}

// StartKafka starts a kfake cluster with opts (plus a port and a data
// directory of its own). It is closed in t.Cleanup.
func StartKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	return StartKafkaBrokers(t, 1, opts...)
}

// StartKafkaBrokers starts a kfake cluster of n brokers, each on a port of
// its own, as StartKafka does.
func StartKafkaBrokers(t testing.TB, n int, opts ...kfake.Opt) *Kafka {
	t.Helper()
	// Port 0: the first start takes free ports as it listens, which Start
	// keeps for the restarts. (A port found free and closed, to be
	// listened on later, can be taken in between, by a test running in
	// parallel or by the source port of any connection.)
	k := &Kafka{t: t, opts: opts, dir: t.TempDir(), ports: make([]int, n)}
	k.Start()
	t.Cleanup(k.Stop)
	return k
}

// Addr returns the first broker's host:port.
func (k *Kafka) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.ports[0])) }

// Addrs returns every broker's host:port.
func (k *Kafka) Addrs() []string {
	out := make([]string, len(k.ports))
	for i, p := range k.ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

// Cluster returns the running cluster (for ControlKey), or nil while stopped.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}

// Start starts the cluster again on the same port with the same data. It
// does nothing while the cluster runs.
func (k *Kafka) Start() {
	k.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return
	}
	opts := append([]kfake.Opt{kfake.NumBrokers(len(k.ports)), kfake.Ports(k.ports...), kfake.DataDir(k.dir)}, k.opts...)
	var err error
	for range 50 { // the port may linger for a moment after Stop
		if k.c, err = kfake.NewCluster(opts...); err == nil {
			break
		}
	}
	if err != nil {
		k.t.Fatalf("testbroker: start kfake: %v", err)
	}
	if k.ports[0] != 0 {
		return
	}
	for i, a := range k.c.ListenAddrs() { // the ports the first start took
		_, port, _ := net.SplitHostPort(a)
		if k.ports[i], err = strconv.Atoi(port); err != nil {
			k.t.Fatalf("testbroker: kfake listens on %q: %v", a, err)
		}
	}
}

// Stop closes the cluster: clients see their connections refused until
// Start. It is idempotent.
func (k *Kafka) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}
