package mqtt

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/sources/simulate"
)

// TestAutoFallsBackAndPublishes checks protocol_version auto against a
// broker that speaks 3.1.1 only: the sink connects with 3.1.1, every
// message is acked, and pspf_mqtt_protocol_version says 4.
func TestAutoFallsBackAndPublishes(t *testing.T) {
	got := make(chan string, 16)
	b := mqtttest.StartV311(t, mqtttest.RefuseVersion(), func(_ int, c net.Conn, r *bufio.Reader) {
		for {
			typ, flags, _, body, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
			if err != nil {
				return
			}
			if typ == packets.Publish {
				_, id, payload, _, _ := mqttc.ParsePublish(flags, body, false)
				got <- string(payload)
				if _, err := c.Write([]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)}); err != nil {
					return
				}
			}
		}
	})
	cfg := *Defaults()
	cfg.Broker, cfg.Topic, cfg.ProtocolVersion, cfg.Encoding = b.URL(), "t", "auto", "raw"
	s := newSink(t, cfg)
	recs := records(0, 3)
	for i := range recs {
		recs[i].Raw = []byte{'a' + byte(i)}
	}
	if err := s.Write(context.Background(), recs); err != nil {
		t.Fatalf("write: %v", err)
	}
	for _, want := range []string{"a", "b", "c"} {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("got %q, want %q", p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no message %q", want)
		}
	}
	if v := s.version.Load(); v != 4 {
		t.Errorf("pspf_mqtt_protocol_version %d, want 4 (3.1.1)", v)
	}
	if n := b.Refused(); n != 1 {
		t.Errorf("%d MQTT 5 CONNECTs refused, want 1", n)
	}
}

// TestAutoNeedsV5FailsConnect checks that under auto the options that
// need MQTT 5 are never dropped silently: a broker that refuses MQTT 5
// fails the connect for good (a setup error: a reload to it is rolled
// back), naming them.
func TestAutoNeedsV5FailsConnect(t *testing.T) {
	b := mqtttest.StartV311(t, mqtttest.RefuseVersion(), func(int, net.Conn, *bufio.Reader) {})
	cfg := *Defaults()
	cfg.Broker, cfg.Topic, cfg.ProtocolVersion = b.URL(), "t", "auto"
	cfg.MessageExpiry, cfg.UserProperties, cfg.Unauthorized = time.Hour, map[string]string{"a": "b"}, deadLetter
	s, err := New(cfg, agent.Env{AgentName: "gw1", Pipeline: "p", Component: "mqtt"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Connect(ctx)
	if err == nil || !agent.IsPermanent(err) {
		t.Fatalf("connect: got %v, want a permanent error", err)
	}
	for _, want := range []string{"refused MQTT 5", "message_expiry, user_properties, unauthorized: dead_letter needs it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("connect: got %v, want it to contain %q", err, want)
		}
	}
}

// TestAutoConfigTakesV5Options checks that protocol_version auto accepts
// the options that need MQTT 5 (TestAutoNeedsV5FailsConnect: what a
// fallback does with them) and 3.1.1 still refuses them.
func TestAutoConfigTakesV5Options(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["mqtt"] = Factory()
	parse := func(v string) error {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{mqtt: {broker: 'tcp://x:1', topic: t, protocol_version: "+v+", message_expiry: 1h, user_properties: {a: b}, unauthorized: dead_letter}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		return err
	}
	if err := parse("auto"); err != nil {
		t.Errorf("auto: %v", err)
	}
	if err := parse("3.1.1"); err == nil || !strings.Contains(err.Error(), "needs protocol_version: 5 or auto") {
		t.Errorf("3.1.1: got %v, want the options refused", err)
	}
}
