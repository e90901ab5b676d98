package mqttc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/testbroker"
)

// TestMosquittoTLSPacedReads checks that reads over TLS pause against a
// real mosquitto TLS listener (which sends each message in its own TLS
// record): under MQTT 5 with a ReadPace of 100 ms, 300 QoS 1 messages
// published one every 2 ms come through once each and in order, in
// bursts that each end with a Drained (a read that found the socket
// drained, then a pause), at least 5 messages per burst on average
// (about 50 expected; one per burst if a pause let one record through).
// Counted by messages, not by time.
func TestMosquittoTLSPacedReads(t *testing.T) {
	certs := testbroker.NewCerts(t)
	mq := testbroker.Start(t, testbroker.Options{TLS: &testbroker.TLS{CAFile: certs.CAFile, CertFile: certs.ServerCert, KeyFile: certs.ServerKey}})
	ca, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)

	const n = 300
	var (
		mu     sync.Mutex
		got    []string
		drains int
	)
	all := make(chan struct{})
	o := testOptions(mq.TLSURL())
	o.ClientID, o.CleanSession = "t-tls-paced", true
	o.ProtocolVersion, o.ReadPace, o.TLS = 5, 100*time.Millisecond, &tls.Config{RootCAs: roots}
	sub := mqttc.New(o, mqttc.Handlers{
		Message: func(m *mqttc.Message, _ <-chan struct{}) {
			m.Ack()
			mu.Lock()
			defer mu.Unlock()
			got = append(got, string(m.Payload()))
			if len(got) == n {
				close(all)
			}
		},
		Drained: func() {
			mu.Lock()
			drains++
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := sub.Connect(ctx); err != nil {
		t.Fatalf("connect over TLS: %v", err)
	}
	defer sub.Disconnect(0)
	if err := sub.Subscribe(ctx, map[string]byte{"tp/#": 1}); err != nil {
		t.Fatal(err)
	}

	po := testOptions(mq.URL())
	po.ClientID, po.CleanSession, po.ProtocolVersion = "t-tls-pub", true, 5
	pub := mqttc.New(po, mqttc.Handlers{})
	if _, err := pub.Connect(ctx); err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	defer pub.Disconnect(0)
	mu.Lock()
	drains = 0 // from here: the bursts of the messages
	mu.Unlock()
	tick := time.NewTicker(2 * time.Millisecond) // the load's pace, not a synchronisation
	defer tick.Stop()
	for i := range n {
		<-tick.C
		if err := pub.Publish(ctx, "tp/x", 1, false, []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("got %d of %d messages", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Fatalf("message %d: got %q, want %d (each once, in order)", i, p, i)
		}
	}
	t.Logf("%d messages in %d bursts", n, drains)
	if drains == 0 || n/drains < 5 {
		t.Errorf("%d messages in %d bursts (Drained), want at least 5 per burst (none: reads over TLS not paced; one: a pause lets one record through)", n, drains)
	}
}
