package mqtt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/wait"
)

// publisher5 is an MQTT 5 client the tests publish with (paho's client
// speaks 3.1.1 only).
func publisher5(t testing.TB, url string) *mqttc.Client {
	t.Helper()
	c := mqttc.New(mqttc.Options{Brokers: []string{url}, ClientID: "pub5-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		ProtocolVersion: 5, CleanSession: true, KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, MaxReconnect: time.Second}, mqttc.Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx); err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestMosquittoV5ReceiveMaximum checks that under MQTT 5 the broker sends
// max_in_flight QoS 1 messages before the first is acked, where under
// 3.1.1 mosquitto stops at its own per-client limit (20): a group commit
// then covers a whole linger's worth.
func TestMosquittoV5ReceiveMaximum(t *testing.T) {
	mq := testbroker.Start(t, testbroker.Options{MaxInflight: 20}) // mosquitto's default
	cfg := *Defaults()
	cfg.ProtocolVersion = "5"
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-recvmax"
	cfg.Subscriptions = []Subscription{{Topic: "rm/#", QoS: 1}}
	cfg.MaxInFlight = 300
	s := realSource(t, cfg)
	pub := publisher5(t, mq.URL())
	const n = 250
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range n {
		if err := pub.Publish(ctx, "rm/x", 1, false, []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// Nothing is read, so nothing is acked: every message queued came
	// without an ack.
	if !wait.Until(10*time.Second, func() bool { return s.queuedLen() == n }) {
		t.Fatalf("got %d messages unacked, want %d: the broker did not take Receive Maximum %d", s.queuedLen(), n, cfg.MaxInFlight)
	}
	recs := readN(t, s, n, 10*time.Second)
	for i, r := range recs {
		if string(r.Raw) != strconv.Itoa(i) {
			t.Fatalf("record %d: got %q, want %d (in order)", i, r.Raw, i)
		}
	}
}

// TestMosquittoV5UserProperties checks that the user properties the
// config names become string fields, the first value of each, and that a
// message without one has no such field.
func TestMosquittoV5UserProperties(t *testing.T) {
	mq := testbroker.Start(t, testbroker.Options{})
	cfg := *Defaults()
	cfg.ProtocolVersion = "5"
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-props"
	cfg.Subscriptions = []Subscription{{Topic: "up/#", QoS: 1}}
	cfg.UserProperties = []string{"device", "unit"}
	s := realSource(t, cfg)
	pub := publisher5(t, mq.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []*mqttc.Publication{
		{Topic: "up/1", QoS: 1, Payload: []byte("a"), User: []mqttc.UserProperty{{Key: "device", Value: "d1"}, {Key: "unit", Value: "°C"}, {Key: "device", Value: "second"}}},
		{Topic: "up/2", QoS: 1, Payload: []byte("b"), User: []mqttc.UserProperty{{Key: "other", Value: "x"}}},
	} {
		ack, err := pub.PublishAsync(ctx, p)
		if err == nil {
			err = <-ack
		}
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	recs := readN(t, s, 2, 10*time.Second)
	if r := recs[0]; r.Field("device").Str != "d1" || r.Field("unit").Str != "°C" || len(r.Fields) != 2 {
		t.Errorf("got fields %+v, want device d1 and unit °C only", r.Fields)
	}
	if r := recs[1]; len(r.Fields) != 0 {
		t.Errorf("got fields %+v, want none", r.Fields)
	}
}

// TestMosquittoV5RefusalReasonCode checks that a CONNACK refusal carries
// its MQTT 5 reason code and stays a permanent setup error. (mosquitto
// 2.0 answers a wrong password with 0x87, not authorized, rather than
// 0x86.)
func TestMosquittoV5RefusalReasonCode(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	writePasswd(t, pw, "gw", "s3cret")
	mq := testbroker.Start(t, testbroker.Options{Extra: "allow_anonymous false\npassword_file " + pw + "\n"})
	cfg := *Defaults()
	cfg.ProtocolVersion = "5"
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-reasons"
	cfg.Username, cfg.Password = "gw", "wrong"
	cfg.Subscriptions = []Subscription{{Topic: "a/#", QoS: 1}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(cfg, agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	err = s.Connect(ctx)
	var re *mqttc.RefusedError
	if !errors.As(err, &re) || !re.V5 || re.Code != 0x87 || !agent.IsPermanent(err) || !strings.Contains(err.Error(), "not authorized (reason code 0x87)") {
		t.Errorf("connect with a wrong password: got %v, want a permanent refusal with reason code 0x87", err)
	}
}

// writePasswd writes a mosquitto password file with one user.
func writePasswd(t *testing.T, path, user, pass string) {
	t.Helper()
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", path, user, pass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMosquittoV5PacedReads runs the source with its reads paced (MQTT 5,
// a linger of 200 ms) against mosquitto while messages come every 2 ms,
// more in a linger than half of its Receive Maximum (max_in_flight 100):
// every message arrives once and in order, each batch is acked, and the
// pauses, shortened to what the window allows, never stall the flow for
// good.
func TestMosquittoV5PacedReads(t *testing.T) {
	mq := testbroker.Start(t, testbroker.Options{})
	cfg := *Defaults()
	cfg.ProtocolVersion = "5"
	cfg.Brokers = []string{mq.URL()}
	cfg.ClientID = "t-paced"
	cfg.Subscriptions = []Subscription{{Topic: "paced/#", QoS: 1}}
	cfg.MaxInFlight = 100
	cfg.Linger = 200 * time.Millisecond
	s := realSource(t, cfg)
	pub := publisher5(t, mq.URL())
	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pubErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond) // the load's pace, not a synchronisation
		defer tick.Stop()
		for i := range n {
			<-tick.C
			if err := pub.Publish(ctx, "paced/x", 1, false, []byte(strconv.Itoa(i))); err != nil {
				pubErr <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
		}
		pubErr <- nil
	}()
	recs := readN(t, s, n, 30*time.Second)
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("got %d records, want %d", len(recs), n)
	}
	for i, r := range recs {
		if string(r.Raw) != strconv.Itoa(i) {
			t.Fatalf("record %d: got %q, want %d (each once, in order)", i, r.Raw, i)
		}
	}
}
