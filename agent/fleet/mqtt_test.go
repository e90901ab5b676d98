//go:build !no_mqtt

package fleet

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/pspf/pspf-edge/internal/mqttc"
	"github.com/pspf/pspf-edge/internal/mqttc/mqtttest"
	"github.com/pspf/pspf-edge/internal/testbroker"
	"github.com/pspf/pspf-edge/internal/testkit"
)

func TestChannelMQTT(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	c := DefaultConfig()
	c.Channel, c.MQTT.Broker = ChannelMQTT, m.URL()
	channelSuite(t, c)
}

// A broker restart is one outage: one WARN, counted, and once the agent is
// connected again it subscribes again (the session is clean, the broker
// forgot it), so a bundle pushed after the restart is applied.
func TestChannelMQTTReconnect(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	c := DefaultConfig()
	c.Channel, c.MQTT.Broker = ChannelMQTT, m.URL()
	sk, keys := testKey(t)
	push(t, c, "all", sign(t, sk, 1, File{"a.yaml", pipe("v1")}))
	e, log := runFleetAgent(t, c, keys, "gw-1", nil)
	testkit.Eventually(t, 20*time.Second, "version 1", func() bool { return e.a.Version() == 1 }, log)
	m.Stop()
	testkit.Eventually(t, 20*time.Second, "the lost connection counted", func() bool {
		n, _ := strconv.Atoi(e.metric(`pspf_fleet_channel_errors_total{channel="mqtt"}`))
		return n >= 1
	}, log)
	m.Restart()
	push(t, c, "name/gw-1", sign(t, sk, 2, File{"a.yaml", pipe("v2")}))
	testkit.Eventually(t, 30*time.Second, "version 2, pushed after the restart", func() bool { return e.a.Version() == 2 }, log)
	testkit.Eventually(t, 10*time.Second, "the outage's end logged", func() bool {
		return strings.Contains(log.String(), "config channel reachable again")
	}, log)
	if n := strings.Count(log.String(), "config channel unreachable"); n != 1 {
		t.Errorf("got %d WARN lines for one outage, want 1:\n%s", n, log)
	}
	if n := strings.Count(log.String(), "level=WARN"); n != 1 {
		t.Errorf("got %d WARN lines, want the outage's only:\n%s", n, log)
	}
}

// A retained message on a bundle topic larger than any bundle is dropped
// unread, refused as malformed (counted, one WARN), and the channel goes on.
func TestChannelMQTTOversize(t *testing.T) {
	m := testbroker.Start(t, testbroker.Options{})
	c := DefaultConfig()
	c.Channel, c.MQTT.Broker = ChannelMQTT, m.URL()
	sk, keys := testKey(t)
	push(t, c, "all", bytes.Repeat([]byte("x"), MaxBundleBytes+100))
	e, log := runFleetAgent(t, c, keys, "gw-1", nil)
	testkit.Eventually(t, 20*time.Second, "the oversize message refused", func() bool {
		return e.metric(`pspf_fleet_bundles_refused_total{reason="malformed"}`) == "1"
	}, log)
	push(t, c, "name/gw-1", sign(t, sk, 1, File{"a.yaml", pipe("v1")}))
	testkit.Eventually(t, 20*time.Second, "version 1 after it", func() bool { return e.a.Version() == 1 }, log)
	if n := strings.Count(log.String(), "bundle refused"); n != 1 {
		t.Errorf("got %d refusals logged, want 1:\n%s", n, log)
	}
}

// A SUBSCRIBE the broker refuses (an ACL not yet granting the topic) or
// leaves unanswered is tried again with a backoff on the same connection,
// one WARN for the outage: once the broker grants it, the retained bundle
// is applied without waiting for a reconnect. mosquitto 2.0.11 grants a
// subscription its ACL denies (and then delivers nothing), so the broker
// is scripted.
func TestChannelMQTTSubscribeRetried(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int
		fail     func(c net.Conn, r *bufio.Reader) bool // fails one SUBSCRIBE
		warn     string
	}{
		{name: "refused", failures: 2, warn: "broker refused subscription", fail: func(c net.Conn, r *bufio.Reader) bool {
			_, ok := mqtttest.Subscribe(c, r, 0x80)
			return ok
		}},
		{name: "unanswered", failures: 1, warn: "no SUBACK within 300ms", fail: func(c net.Conn, r *bufio.Reader) bool {
			for {
				typ, _, _, _, err := mqttc.ReadPacket(r, mqtttest.MaxPacket)
				if err != nil || typ == packets.Subscribe {
					return err == nil
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sk, keys := testKey(t)
			bundle := sign(t, sk, 1, File{"a.yaml", pipe("v1")})
			c := DefaultConfig()
			b := mqtttest.Start(t, func(n int, conn net.Conn, r *bufio.Reader) {
				if n == 1 {
					for range tc.failures {
						if !tc.fail(conn, r) {
							return
						}
					}
					if _, ok := mqtttest.Subscribe(conn, r, 1); !ok {
						return
					}
					p := &mqttc.Publication{Topic: topicFor(c.MQTT.Topic, "all"), QoS: 1, Retain: true, Payload: bundle}
					if _, err := conn.Write(mqttc.EncodePublish(false, p, 1)); err != nil {
						return
					}
				}
				_, _ = io.Copy(io.Discard, r) // the PUBACK; a reconnect is served nothing
			})
			c.Channel, c.MQTT.Broker = ChannelMQTT, b.URL()
			e, log := runFleetAgentWith(t, c, keys, "gw-1", nil, func(ch Channel) { ch.(*mqttChannel).subTimeout = 300 * time.Millisecond })
			testkit.Eventually(t, 20*time.Second, "version 1, once the SUBSCRIBE is granted", func() bool { return e.a.Version() == 1 }, log)
			if n := b.Settled(t); n != 1 {
				t.Errorf("got %d connections, want 1 (the SUBSCRIBE retried on it)", n)
			}
			if got := e.metric(`pspf_fleet_channel_errors_total{channel="mqtt"}`); got != strconv.Itoa(tc.failures) {
				t.Errorf("got %s channel errors, want %d (one per failed SUBSCRIBE)", got, tc.failures)
			}
			testkit.Eventually(t, 10*time.Second, "the outage's end logged", func() bool {
				return strings.Contains(log.String(), "config channel reachable again")
			}, log)
			if n := strings.Count(log.String(), "level=WARN"); n != 1 || !strings.Contains(log.String(), tc.warn) {
				t.Errorf("got %d WARN lines, want 1 for the outage, naming %q:\n%s", n, tc.warn, log)
			}
		})
	}
}
