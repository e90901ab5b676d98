package mqtt

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/sinks/console"
)

// TestAutoFallsBackAndReads checks protocol_version auto against a
// broker that speaks 3.1.1 only (it answers an MQTT 5 CONNECT with
// return code 0x01): the source subscribes under 3.1.1, reads what the
// broker sends, pspf_mqtt_protocol_version says 4, and the new client a
// nack makes (to have the batch redelivered) goes straight to 3.1.1.
func TestAutoFallsBackAndReads(t *testing.T) {
	b := mqtttest.StartV311(t, mqtttest.RefuseVersion(), func(_ int, c net.Conn, r *bufio.Reader) {
		if _, ok := mqtttest.Subscribe(c, r, 1); !ok {
			return
		}
		if _, err := c.Write([]byte{packets.Publish<<4 | 2, 7, 0, 1, 'a', 0, 1, 'h', 'i'}); err != nil { // QoS 1 "hi" on "a", id 1
			return
		}
		for {
			if _, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket); err != nil {
				return
			}
		}
	})
	cfg := *Defaults()
	cfg.ProtocolVersion = "auto"
	cfg.Brokers = []string{b.URL()}
	cfg.ClientID = "t-auto"
	cfg.Subscriptions = []Subscription{{Topic: "a", QoS: 1}}
	s := realSource(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, ack, err := s.Read(ctx)
	if err != nil || len(recs) != 1 || string(recs[0].Raw) != "hi" {
		t.Fatalf("read: got %d records, %v; want hi", len(recs), err)
	}
	if v := s.version.Load(); v != 4 {
		t.Errorf("pspf_mqtt_protocol_version %d, want 4 (3.1.1)", v)
	}
	ack(ctx, errors.New("not durable")) // the next Read reconnects with a new client
	if recs := readN(t, s, 1, 10*time.Second); string(recs[0].Raw) != "hi" {
		t.Fatalf("redelivered: got %q, want hi", recs[0].Raw)
	}
	if n := b.Refused(); n != 1 {
		t.Errorf("%d MQTT 5 CONNECTs refused, want 1: the source's new client must keep 3.1.1", n)
	}
}

// TestAutoUserPropertiesNeedV5 checks that user_properties, which need
// MQTT 5, are taken with protocol_version auto but never dropped
// silently: a broker that refuses MQTT 5 fails the connect for good,
// naming them. Under 3.1.1 the config is refused.
func TestAutoUserPropertiesNeedV5(t *testing.T) {
	b := mqtttest.StartV311(t, mqtttest.RefuseVersion(), func(int, net.Conn, *bufio.Reader) {})
	cfg := *Defaults()
	cfg.ProtocolVersion = "auto"
	cfg.Brokers = []string{b.URL()}
	cfg.ClientID = "t-auto-props"
	cfg.CleanSession = true
	cfg.Subscriptions = []Subscription{{Topic: "a", QoS: 0}}
	cfg.UserProperties = []string{"site"}
	s, err := New(cfg, agent.Env{Pipeline: "p", Component: "mqtt", AgentName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Connect(ctx)
	if err == nil || !agent.IsPermanent(err) || !strings.Contains(err.Error(), "user_properties needs it") {
		t.Fatalf("connect: got %v, want a permanent error naming user_properties", err)
	}

	reg := runner.NewRegistry()
	reg.Sources["mqtt"] = Factory()
	reg.Sinks["console"] = console.Factory()
	parse := func(v string) error {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{mqtt: {brokers: ['tcp://x:1'], subscriptions: [{topic: a}], protocol_version: "+v+", user_properties: [site]}}]\nsinks: [{console: {}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		return err
	}
	if err := parse("auto"); err != nil {
		t.Errorf("auto: %v", err)
	}
	if err := parse("3.1.1"); err == nil || !strings.Contains(err.Error(), "needs protocol_version: 5 or auto") {
		t.Errorf("3.1.1: got %v, want user_properties refused", err)
	}
}
