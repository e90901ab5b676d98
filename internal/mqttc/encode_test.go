package mqttc

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestEncodeAgainstPaho decodes the client's packets with paho's packets
// package, an implementation of its own, and compares every field.
func TestEncodeAgainstPaho(t *testing.T) {
	long := strings.Repeat("p", 200_000) // a four-byte remaining length
	for _, tc := range []struct {
		name string
		will *Will
		user string
		pass string
	}{
		{name: "bare"},
		{name: "will and login", will: &Will{Topic: "st/a", Payload: []byte("offline"), QoS: 1, Retain: true}, user: "u", pass: "pw"},
		{name: "user only", user: "u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := connectPacket(&Options{ClientID: "cid", CleanSession: true, KeepAlive: 70 * time.Second, Will: tc.will}, tc.user, tc.pass)
			p, err := packets.ReadPacket(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			cp := p.(*packets.ConnectPacket)
			if cp.ProtocolName != "MQTT" || cp.ProtocolVersion != 4 || !cp.CleanSession || cp.Keepalive != 70 || cp.ClientIdentifier != "cid" {
				t.Errorf("got %+v", cp)
			}
			if cp.UsernameFlag != (tc.user != "") || cp.Username != tc.user || cp.PasswordFlag != (tc.pass != "") || string(cp.Password) != tc.pass {
				t.Errorf("login: got %+v, want %q/%q", cp, tc.user, tc.pass)
			}
			if w := tc.will; cp.WillFlag != (w != nil) || w != nil && (cp.WillTopic != w.Topic || string(cp.WillMessage) != string(w.Payload) || cp.WillQos != w.QoS || cp.WillRetain != w.Retain) {
				t.Errorf("will: got %+v, want %+v", cp, w)
			}
			if code := cp.Validate(); code != packets.Accepted {
				t.Errorf("paho refuses the CONNECT with code %d", code)
			}
		})
	}
	for _, qos := range []byte{0, 1, 2} {
		b := publishPacket(false, &Publication{Topic: "a/b", QoS: qos, Retain: qos == 1, Payload: []byte(long)}, 0x1234)
		p, err := packets.ReadPacket(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if n := publishLen(false, &Publication{Topic: "a/b", QoS: qos, Payload: []byte(long)}); n != len(b) {
			t.Errorf("QoS %d: publishLen %d, packet %d bytes", qos, n, len(b))
		}
		pp := p.(*packets.PublishPacket)
		wantID := uint16(0x1234)
		if qos == 0 {
			wantID = 0
		}
		if pp.TopicName != "a/b" || pp.Qos != qos || pp.Retain != (qos == 1) || pp.MessageID != wantID || string(pp.Payload) != long {
			t.Errorf("QoS %d: got topic %q qos %d retain %v id %d payload %d bytes", qos, pp.TopicName, pp.Qos, pp.Retain, pp.MessageID, len(pp.Payload))
		}
	}
	b := subscribePacket(false, 7, []string{"a/#", "$share/g/b/+"}, []byte{1, 0})
	p, err := packets.ReadPacket(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	sp := p.(*packets.SubscribePacket)
	if sp.MessageID != 7 || !slices.Equal(sp.Topics, []string{"a/#", "$share/g/b/+"}) || !slices.Equal(sp.Qoss, []byte{1, 0}) {
		t.Errorf("got %+v", sp)
	}
}
