//go:build !no_mqtt

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pspf/pspf-edge/agent"
	"github.com/pspf/pspf-edge/agent/fleet"
	"github.com/pspf/pspf-edge/internal/mqttc"
	mqttsink "github.com/pspf/pspf-edge/sinks/mqtt"
)

var templateField = regexp.MustCompile(`\{[^}]*\}`)

// mqttBeats reads the retained heartbeats (and those that come within
// wait) of an MQTT heartbeat sink's topic, its template fields made
// wildcards; ok is false if conf is not an MQTT sink's.
func mqttBeats(ctx context.Context, conf any, wait time.Duration) (beats []fleet.Heartbeat, ok bool, err error) {
	c, ok := conf.(*mqttsink.Config)
	if !ok {
		return nil, false, nil
	}
	o := mqttc.Options{Brokers: []string{c.Broker}, Username: c.Username, Password: c.Password,
		ClientID: fmt.Sprintf("pspf-fleet-status-%d", time.Now().UnixNano()), CleanSession: true,
		KeepAlive: c.KeepAlive, ConnectTimeout: c.ConnectTimeout, Name: "fleet status"}
	switch c.ProtocolVersion {
	case "5":
		o.ProtocolVersion = 5
	case "auto":
		o.ProtocolVersion = mqttc.ProtocolAuto
	}
	if on, err := c.TLS.On(strings.SplitN(c.Broker, ":", 2)[0]); err == nil && on {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, true, err
		}
		o.TLS = tc
	}
	var mu sync.Mutex
	var out []fleet.Heartbeat
	cl := mqttc.New(o, mqttc.Handlers{Message: func(m *mqttc.Message, _ <-chan struct{}) {
		m.Ack()
		var hb fleet.Heartbeat
		if json.Unmarshal(m.Payload(), &hb) == nil && hb.Agent != "" {
			mu.Lock()
			out = append(out, hb)
			mu.Unlock()
		}
	}})
	defer cl.Disconnect(0)
	if _, err := cl.Connect(ctx); err != nil {
		return nil, true, fmt.Errorf("mqtt connect %s: %w", agent.RedactURL(c.Broker), err)
	}
	filter := templateField.ReplaceAllString(c.Topic, "+")
	if err := cl.Subscribe(ctx, map[string]byte{filter: 1}); err != nil {
		return nil, true, fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(out), true, nil
}
