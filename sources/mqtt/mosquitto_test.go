package mqtt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// versions are the MQTT versions the tests against mosquitto run under.
var versions = []string{"3.1.1", "5"}

// publisher is a plain paho client the tests publish with.
func publisher(t testing.TB, url string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectTimeout(2 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// publishSure publishes until the broker has acknowledged the message: a
// QoS 1 publisher that does not give up across broker restarts.
func publishSure(t testing.TB, c paho.Client, topic string, qos byte, payload string) {
	if !wait.Until(30*time.Second, func() bool {
		tok := c.Publish(topic, qos, false, payload)
		return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
	}) {
		t.Errorf("publish %s: not accepted within 30s", payload)
	}
}

func realSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	s, err := New(cfg, agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "test"})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// readN reads until n records arrived, acking each batch with nil.
func readN(t testing.TB, s *Source, n int, timeout time.Duration) []agent.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []agent.Record
	for len(out) < n {
		recs, ack, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d records: %v", len(out), n, err)
		}
		for _, r := range recs { // the source reuses a batch's slices once it is acked
			r.Fields = slices.Clone(r.Fields)
			out = append(out, r)
		}
		ack(ctx, nil)
	}
	return out
}

func TestMosquittoDeliveryWildcardsTemplate(t *testing.T) {
	for _, v := range append(versions, "auto") {
		t.Run("v"+v, func(t *testing.T) { testMosquittoDeliveryWildcardsTemplate(t, v) })
	}
}

func testMosquittoDeliveryWildcardsTemplate(t *testing.T, v string) {
	mq := testbroker.Start(t, testbroker.Options{})
	cfg := *Defaults()
	cfg.ProtocolVersion = v
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-delivery"
	cfg.Subscriptions = []Subscription{{Topic: "sensors/+/+/temp", QoS: 1}, {Topic: "alarms/#", QoS: 0}}
	cfg.TopicTemplate = "sensors/{site}/{device}/temp"
	cfg.Key = "{device}"
	cfg.TopicField = "topic"
	s := realSource(t, cfg)
	pub := publisher(t, mq.URL())
	publishSure(t, pub, "sensors/plant1/d1/temp", 1, "21.5")
	publishSure(t, pub, "sensors/plant1/d2/hum", 1, "not subscribed")
	publishSure(t, pub, "alarms/plant1/door", 0, "open")
	publishSure(t, pub, "sensors/plant2/d3/temp", 0, "\xff\xfe not utf-8")
	recs := readN(t, s, 3, 10*time.Second)
	got := map[string]agent.Record{}
	for _, r := range recs {
		got[r.Field("topic").Str] = r
	}
	if r := got["sensors/plant1/d1/temp"]; string(r.Raw) != "21.5" || r.Key != "d1" || r.Field("site").Str != "plant1" {
		t.Errorf("got %+v, want raw 21.5, key d1, site plant1", r)
	}
	if r := got["alarms/plant1/door"]; string(r.Raw) != "open" || r.Key != "" {
		t.Errorf("got %+v, want raw open without key", r)
	}
	if r := got["sensors/plant2/d3/temp"]; string(r.Raw) != "\xff\xfe not utf-8" || r.Key != "d3" {
		t.Errorf("got %+v, want the non-UTF-8 payload as sent", r)
	}
	if _, ok := got["sensors/plant1/d2/hum"]; ok {
		t.Errorf("got a message on a topic no filter matches")
	}
	// mosquitto speaks MQTT 5: auto chooses it.
	if want := map[string]int32{"3.1.1": 4, "5": 5, "auto": 5}[v]; s.version.Load() != want {
		t.Errorf("pspf_mqtt_protocol_version %d, want %d", s.version.Load(), want)
	}
}

// TestMosquittoUnackedIsRedelivered: a message read but never acked (the
// agent stopped before it was durable) comes again in the next session.
// TestMosquittoUnackedIsRedelivered checks, at QoS 1 and 2, that a nacked
// message comes again and an acked one does not.
func TestMosquittoUnackedIsRedelivered(t *testing.T) {
	for _, v := range versions {
		t.Run("v"+v, func(t *testing.T) { testMosquittoUnackedIsRedelivered(t, v) })
	}
}

func testMosquittoUnackedIsRedelivered(t *testing.T, v string) {
	for _, qos := range []int{1, 2} {
		t.Run("qos"+strconv.Itoa(qos), func(t *testing.T) {
			mq := testbroker.Start(t, testbroker.Options{})
			cfg := *Defaults()
			cfg.ProtocolVersion = v
			cfg.Brokers = []string{mq.URL()}
			cfg.ClientID = "t-redeliver"
			cfg.Subscriptions = []Subscription{{Topic: "q/#", QoS: qos}}
			s1 := realSource(t, cfg)
			pub := publisher(t, mq.URL())
			publishSure(t, pub, "q/1", byte(qos), "m1")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			recs, ack, err := s1.Read(ctx)
			if err != nil || len(recs) != 1 {
				t.Fatalf("got %d records, %v; want 1", len(recs), err)
			}
			ack(ctx, fmt.Errorf("not durable"))
			_ = s1.Close(ctx)

			s2 := realSource(t, cfg)
			recs = readN(t, s2, 1, 10*time.Second)
			if string(recs[0].Raw) != "m1" {
				t.Errorf("got %q, want m1 again", recs[0].Raw)
			}
			_ = s2.Close(ctx)
			s3 := realSource(t, cfg) // acked now: the broker has nothing more
			publishSure(t, pub, "q/2", byte(qos), "m2")
			if recs = readN(t, s3, 1, 10*time.Second); string(recs[0].Raw) != "m2" {
				t.Errorf("got %q, want m2 (m1 was acked)", recs[0].Raw)
			}
		})
	}
}

func TestMosquittoSharedSubscriptionAndStatus(t *testing.T) {
	for _, v := range versions {
		t.Run("v"+v, func(t *testing.T) { testMosquittoSharedSubscriptionAndStatus(t, v) })
	}
}

func testMosquittoSharedSubscriptionAndStatus(t *testing.T, v string) {
	mq := testbroker.Start(t, testbroker.Options{})
	watcher := publisher(t, mq.URL())
	statuses := make(chan string, 10)
	watcher.Subscribe("agents/+/status", 1, func(_ paho.Client, m paho.Message) { statuses <- string(m.Payload()) }).Wait()
	var srcs []*Source
	for i := range 2 {
		cfg := *Defaults()
		cfg.ProtocolVersion = v
		cfg.Brokers = []string{mq.URL()}
		cfg.ClientID = "t-shared-" + strconv.Itoa(i)
		cfg.Subscriptions = []Subscription{{Topic: "$share/edge/jobs/#", QoS: 1}}
		cfg.Status.Topic = "agents/{agent}-" + strconv.Itoa(i) + "/status"
		cfg.Linger = 0
		srcs = append(srcs, realSource(t, cfg))
	}
	for range 2 {
		select {
		case s := <-statuses:
			if s != "online" {
				t.Errorf("got status %q, want online", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no birth message")
		}
	}
	pub := publisher(t, mq.URL())
	const n = 40
	for i := range n {
		publishSure(t, pub, "jobs/"+strconv.Itoa(i), 1, strconv.Itoa(i))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	perSource := make([]int, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, s := range srcs {
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(seen) == n
				mu.Unlock()
				if done || ctx.Err() != nil {
					return
				}
				rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				recs, ack, err := s.Read(rctx)
				rcancel()
				if err != nil {
					continue
				}
				mu.Lock()
				for _, r := range recs {
					seen[string(r.Raw)]++
					perSource[i]++
				}
				mu.Unlock()
				ack(ctx, nil)
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("got %d distinct messages, want %d", len(seen), n)
	}
	if perSource[0] == 0 || perSource[1] == 0 {
		t.Errorf("got %v messages per source, want the shared subscription to split them", perSource)
	}
	_ = srcs[0].Close(ctx)
	select {
	case s := <-statuses:
		if s != "offline" {
			t.Errorf("got status %q after Close, want offline", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no offline message after Close")
	}
}

func TestMosquittoTLSClientCert(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	mq := testbroker.Start(t, testbroker.Options{TLS: &testbroker.TLS{CAFile: pki.ca, CertFile: pki.serverCert, KeyFile: pki.serverKey, RequireClientCert: true}})
	cfg := *Defaults()
	cfg.Brokers = []string{mq.TLSURL()}
	cfg.ClientID = "t-tls"
	cfg.Subscriptions = []Subscription{{Topic: "secure/#", QoS: 1}}
	cfg.TLS = agent.TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}
	s := realSource(t, cfg)
	// Thirty messages, each its own TLS record, arrive in well under the
	// 10 s: a Read of a TLS connection returns one record, so a read
	// pause after each (MQTT 5, paced reads) would take thirty seconds.
	pub := publisher(t, mq.URL())
	const n = 30
	for i := range n {
		publishSure(t, pub, "secure/x", 1, "over tls "+strconv.Itoa(i))
	}
	for i, r := range readN(t, s, n, 10*time.Second) {
		if want := "over tls " + strconv.Itoa(i); string(r.Raw) != want {
			t.Errorf("record %d: got %q, want %q", i, r.Raw, want)
		}
	}

	// Without the client certificate the broker refuses the handshake.
	cfg.TLS = agent.TLSConfig{CAFile: pki.ca}
	cfg.ClientID = "t-tls-2"
	bad, err := New(cfg, agent.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bad.Connect(ctx); err == nil || !strings.HasPrefix(err.Error(), "mqtt source: connect") {
		t.Errorf("got %v, want a connect error without a client certificate", err)
	}
	_ = bad.Close(ctx)
}

type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// newTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pspf test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(cn+".crt", "CERTIFICATE", der), write(cn+".key", "EC PRIVATE KEY", kder)
	}
	var p testPKI
	p.ca = write("ca.crt", "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.clientCert, p.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

// TestMosquittoRestartQoS1NoLoss stops and restarts the broker in the middle
// of a QoS 1 stream; with the persistent session every message arrives.
func TestMosquittoRestartQoS1NoLoss(t *testing.T) {
	for _, v := range versions {
		t.Run("v"+v, func(t *testing.T) { testMosquittoRestartQoS1NoLoss(t, v) })
	}
}

func testMosquittoRestartQoS1NoLoss(t *testing.T, v string) {
	mq := testbroker.Start(t, testbroker.Options{})
	cfg := *Defaults()
	cfg.ProtocolVersion = v
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-restart"
	cfg.Subscriptions = []Subscription{{Topic: "stream/#", QoS: 1}}
	cfg.MaxReconnect = time.Second
	cfg.KeepAlive = 2 * time.Second
	s := realSource(t, cfg)
	const n = 3000
	var mu sync.Mutex
	seen := make([]int, n)
	distinct := 0
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			recs, ack, err := s.Read(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			for _, r := range recs {
				i, _ := strconv.Atoi(string(r.Raw))
				if seen[i] == 0 {
					distinct++
				}
				seen[i]++
			}
			done := distinct == n
			mu.Unlock()
			ack(ctx, nil)
			if done {
				cancel()
			}
		}
	})
	pub := publisher(t, mq.URL())
	for i := range n {
		if i == n/3 {
			mq.Stop()
			time.Sleep(300 * time.Millisecond) // the outage this test injects (publishSure retries through it), not a wait
			mq.Restart()
		}
		publishSure(t, pub, "stream/"+strconv.Itoa(i%7), 1, strconv.Itoa(i))
	}
	wg.Wait()
	lost, dups := 0, 0
	for _, c := range seen {
		if c == 0 {
			lost++
		}
		if c > 1 {
			dups += c - 1
		}
	}
	t.Logf("broker restart at message %d of %d: lost %d, duplicates %d", n/3, n, lost, dups)
	if lost != 0 {
		t.Errorf("got %d messages lost, want 0", lost)
	}
}

// TestMosquittoPassword: the password comes from a ${file:...} secret, or
// from the broker URL; a wrong one is a connect error that does not show
// it.
func TestMosquittoPassword(t *testing.T) {
	dir := t.TempDir()
	pwfile := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwfile, "gw-17", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	mq := testbroker.Start(t, testbroker.Options{Extra: "allow_anonymous false\npassword_file " + pwfile + "\n"})
	secret := filepath.Join(dir, "mqtt.pass")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["discard"] = agent.Typed[agent.Sink]("discard", func() *struct{} { return &struct{}{} },
		func(*struct{}, agent.Env) (agent.Sink, error) { return discardSink{}, nil })
	text := fmt.Sprintf("sources:\n  - mqtt:\n      brokers: [%q]\n      username: gw-17\n      password: ${file:%s}\n      subscriptions: [{topic: \"x/#\", qos: 1}]\nsinks: [{discard: {}}]\n", mq.URL(), secret)
	spec, err := reg.ParsePipeline("pw.yaml", []byte(text), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := *spec.Sources[0].Config.(*Config)
	cfg.ClientID = "t-password"
	realSource(t, cfg) // connects and subscribes, or fails the test

	// The credentials in the broker URL, as the sink (paho) takes them.
	inURL := cfg
	inURL.ClientID, inURL.Username, inURL.Password = "t-password-url", "", ""
	inURL.Brokers = []string{strings.Replace(mq.URL(), "://", "://gw-17:s3cret@", 1)}
	realSource(t, inURL)

	cfg.Password = "wrong"
	s, err := New(cfg, agent.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = s.Connect(ctx)
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("got %v, want a connect error without the password", err)
	}
	// A refused password is a setup error (a reload to it is rolled back),
	// a stopped broker an outage.
	if !agent.IsPermanent(err) {
		t.Errorf("got %v, want a permanent (setup) error", err)
	}
	t.Logf("wrong password: %v", err)
	down, err := New(Config{Brokers: []string{"tcp://127.0.0.1:" + strconv.Itoa(testbroker.FreePort(t))},
		ClientID: "t-down", Subscriptions: cfg.Subscriptions}, agent.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Connect(ctx); err == nil || agent.IsPermanent(err) {
		t.Errorf("broker down: got %v, want a retryable error", err)
	}
	_ = down.Close(ctx)
	_ = s.Close(ctx)
}

// TestMosquittoWebsocket checks the source over a ws:// listener: the
// client reads MQTT through paho's websocket connection like through TCP.
func TestMosquittoWebsocket(t *testing.T) {
	wsPort := testbroker.FreePort(t)
	mq := testbroker.Start(t, testbroker.Options{Extra: fmt.Sprintf("listener %d 127.0.0.1\nprotocol websockets\n", wsPort)})
	// Start waits for the plain listener; the websockets one comes up after it.
	wait.For(t, 10*time.Second, "the websockets listener", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", wsPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	cfg := *Defaults()
	cfg.Brokers = []string{fmt.Sprintf("ws://127.0.0.1:%d", wsPort)}
	cfg.ClientID = "t-ws"
	cfg.Subscriptions = []Subscription{{Topic: "ws/#", QoS: 1}}
	s := realSource(t, cfg)
	pub := publisher(t, mq.URL())
	const n = 50
	for i := range n {
		publishSure(t, pub, "ws/"+strconv.Itoa(i), 1, strconv.Itoa(i))
	}
	recs := readN(t, s, n, 10*time.Second)
	for i, r := range recs {
		if string(r.Raw) != strconv.Itoa(i) {
			t.Fatalf("record %d: %q, want %d in order", i, r.Raw, i)
		}
	}
}
