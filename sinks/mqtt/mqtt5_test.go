package mqtt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/runner"
	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/sources/simulate"
)

// TestMQTT5PropertiesAndExpiry publishes under MQTT 5 with a message
// expiry and user properties (one a template over the record) to a real
// mosquitto: an MQTT 5 subscriber gets both, per record, and a record
// without the template's field has that property left out.
func TestMQTT5PropertiesAndExpiry(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	got := make(chan *mqttc.Message, 100)
	sub := mqttc.New(mqttc.Options{Brokers: []string{m.URL()}, ClientID: "sub5", ProtocolVersion: 5, CleanSession: true,
		KeepAlive: 30 * time.Second, ConnectTimeout: 5 * time.Second, MaxReconnect: time.Second},
		mqttc.Handlers{Message: func(msg *mqttc.Message, _ <-chan struct{}) { msg.Ack(); got <- msg }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(0)
	if err := sub.Subscribe(ctx, map[string]byte{"v5/#": 1}); err != nil {
		t.Fatal(err)
	}
	cfg := *Defaults()
	cfg.Broker, cfg.Topic, cfg.ProtocolVersion = m.URL(), "v5/{site}", "5"
	cfg.MessageExpiry = 90 * time.Minute
	cfg.UserProperties = map[string]string{"agent": "gw1", "device": "{dev}"}
	s := newSink(t, cfg)
	recs := records(1, 2)
	recs[0].Fields = append(recs[0].Fields, agent.String("dev", "d7"))
	if err := s.Write(ctx, recs); err != nil {
		t.Fatalf("write: %v", err)
	}
	for i := range 2 {
		select {
		case msg := <-got:
			exp, ok := msg.Expiry()
			if !ok || exp <= 0 || exp > 90*time.Minute {
				t.Errorf("message %d: expiry %v %v, want up to 90m", i, exp, ok)
			}
			agentName, _ := msg.UserProperty("agent")
			dev, hasDev := msg.UserProperty("device")
			first := strings.Contains(string(msg.Payload()), `"d7"`)
			if agentName != "gw1" || first && dev != "d7" || !first && hasDev {
				t.Errorf("message %d: user properties %v, want agent gw1 and device d7 only on the record with dev", i, msg.UserProperties())
			}
		case <-ctx.Done():
			t.Fatalf("got %d messages, want 2", i)
		}
	}
}

// TestMQTT5ConfigNeedsVersion5 checks that message_expiry,
// user_properties and unauthorized: dead_letter are refused under 3.1.1,
// which has no properties and no reason codes.
func TestMQTT5ConfigNeedsVersion5(t *testing.T) {
	reg := runner.NewRegistry()
	reg.Sources["simulate"] = simulate.Factory()
	reg.Sinks["mqtt"] = Factory()
	for _, tc := range []struct{ body, want string }{
		{"{broker: 'tcp://x:1', topic: t, message_expiry: 1h}", "message_expiry: needs protocol_version: 5"},
		{"{broker: 'tcp://x:1', topic: t, user_properties: {a: b}}", "user_properties: needs protocol_version: 5"},
		{"{broker: 'tcp://x:1', topic: t, protocol_version: 4}", "protocol_version"},
		{"{broker: 'tcp://x:1', topic: t, protocol_version: 5, user_properties: {a: '{b'}}", "user_properties: a: "},
		{"{broker: 'tcp://x:1', topic: t, unauthorized: dead_letter}", "unauthorized: dead_letter needs protocol_version: 5"},
		{"{broker: 'tcp://x:1', topic: t, protocol_version: 5, unauthorized: drop}", `unauthorized: must be retry or dead_letter, got "drop"`},
	} {
		_, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{mqtt: "+tc.body+"}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
	if _, err := reg.ParsePipeline("p.yaml", []byte("sources: [{simulate: {}}]\nsinks: [{mqtt: {broker: 'tcp://x:1', topic: t, protocol_version: 5, message_expiry: 1h, user_properties: {a: b}, unauthorized: dead_letter}}]\n"), runner.Defaults{Buffer: runner.DefaultBufferConfig()}); err != nil {
		t.Errorf("a valid MQTT 5 config: %v", err)
	}
}
