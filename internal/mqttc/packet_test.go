package mqttc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestReadPacket checks the decoder on good and malformed packets.
func TestReadPacket(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		topic    string
		payload  string
		id       uint16
		err      string
	}{
		{name: "qos0", in: "\x30\x07\x00\x03a/bhi", topic: "a/b", payload: "hi"},
		{name: "qos1", in: "\x32\x09\x00\x03a/b\x01\x02hi", topic: "a/b", id: 0x102, payload: "hi"},
		{name: "qos1 empty payload", in: "\x32\x07\x00\x03a/b\x00\x05", topic: "a/b", id: 5},
		{name: "qos2", in: "\x34\x09\x00\x03a/b\xff\xffhi", topic: "a/b", id: 0xffff, payload: "hi"},
		{name: "qos3", in: "\x36\x05\x00\x03a/b", err: "QoS 3"},
		{name: "short topic", in: "\x30\x03\x00\x05a", err: "topic of 5 bytes"},
		{name: "empty topic", in: "\x30\x04\x00\x00hi", err: "empty topic"},
		{name: "no id", in: "\x32\x05\x00\x03a/b", err: "topic of 3 bytes"},
		{name: "qos1 id 0", in: "\x32\x09\x00\x03a/b\x00\x00hi", err: "PUBLISH QoS 1 with packet id 0"},
		{name: "qos2 id 0", in: "\x34\x07\x00\x03a/b\x00\x00", err: "PUBLISH QoS 2 with packet id 0"},
		{name: "empty", in: "\x30\x00", err: "PUBLISH of 0 bytes"},
		{name: "truncated", in: "\x30\x07\x00\x03a", err: "truncated packet"},
		{name: "truncated length", in: "\x30\x80", err: "truncated packet"},
		{name: "long length", in: "\x30\xff\xff\xff\xff\x01", err: "malformed remaining length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, flags, _, body, err := readPacket(bufio.NewReader(strings.NewReader(tc.in)), 1<<20)
			var topic string
			var id uint16
			var payload []byte
			if err == nil {
				if typ != packets.Publish {
					t.Fatalf("type %d, want PUBLISH", typ)
				}
				topic, id, payload, _, _, err = parsePublish(flags, body, false)
			}
			if tc.err != "" {
				var pe *protocolError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want a protocol violation naming %q", err, tc.err)
				}
				return
			}
			if err != nil || topic != tc.topic || id != tc.id || string(payload) != tc.payload {
				t.Errorf("got %q %d %q %v, want %q %d %q", topic, id, payload, err, tc.topic, tc.id, tc.payload)
			}
		})
	}
}

// TestCheckPacket checks the packets other than PUBLISH that a connected
// client may receive, and the violations it names.
func TestCheckPacket(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		err      string
	}{
		{name: "puback", in: "\x40\x02\x00\x07"},
		{name: "pubrel", in: "\x62\x02\x00\x07"},
		{name: "suback", in: "\x90\x04\x00\x01\x01\x80"},
		{name: "unsuback", in: "\xb0\x02\x00\x01"},
		{name: "pingresp", in: "\xd0\x00"},
		{name: "type 0", in: "\x00\x00", err: "unknown packet type 0"},
		{name: "type 15", in: "\xf0\x00", err: "unknown packet type 15"},
		{name: "connack", in: "\x20\x02\x00\x00", err: "unexpected CONNACK"},
		{name: "subscribe", in: "\x82\x02\x00\x01", err: "unexpected SUBSCRIBE"},
		{name: "puback flags", in: "\x42\x02\x00\x07", err: "PUBACK with flags 0x2"},
		{name: "pubrel flags", in: "\x60\x02\x00\x07", err: "PUBREL with flags 0x0"},
		{name: "puback long", in: "\x40\x03\x00\x07\x00", err: "PUBACK of 3 bytes"},
		{name: "puback short", in: "\x40\x01\x00", err: "PUBACK of 1 bytes"},
		{name: "puback id 0", in: "\x40\x02\x00\x00", err: "PUBACK with packet id 0"},
		{name: "suback no codes", in: "\x90\x02\x00\x01", err: "SUBACK of 2 bytes"},
		{name: "suback code", in: "\x90\x03\x00\x01\x03", err: "return code 0x3"},
		{name: "pingresp body", in: "\xd0\x01\x00", err: "PINGRESP of 1 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, flags, _, body, err := readPacket(bufio.NewReader(strings.NewReader(tc.in)), 1<<20)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			err = checkPacket(typ, flags, body, false)
			var pe *protocolError
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case tc.err != "" && (!errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("err %v, want a protocol violation naming %q", err, tc.err)
			}
		})
	}
}

// FuzzReadPacket feeds the decoder arbitrary bytes: it must not panic; a
// stream ends cleanly only between packets, every other failure is a
// protocolError; a PUBLISH that parses must account for every byte of its
// body and have a topic, a QoS up to 2 and, with QoS 1 or 2, a packet id
// other than 0; any other packet that passes checkPacket has the length
// and packet id MQTT 3.1.1 gives it.
func FuzzReadPacket(f *testing.F) {
	f.Add([]byte("\x30\x07\x00\x03a/bhi\x32\x09\x00\x03a/b\x01\x02hi"))
	f.Add([]byte("\x90\x03\x00\x01\x80\xd0\x00"))
	f.Add([]byte("\x30\xff\xff\xff\x7f"))
	f.Add([]byte("\x32\x07\x00\x03a/b\x00\x00\x36\x05\x00\x03a/b"))
	f.Add([]byte("\x40\x02\x00\x00\x62\x02\x00\x01\xf0\x00"))
	f.Add([]byte("\x32\x50\x00\x00"))
	violation := func(t *testing.T, err error) {
		t.Helper()
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Fatalf("error %v is not a named protocol violation", err)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			typ, flags, n, body, err := readPacket(r, 64)
			if err == io.EOF {
				return
			}
			if err != nil {
				violation(t, err)
				return
			}
			if typ != packets.Publish {
				if n > 64 {
					return // the client drops the connection
				}
				if err := checkPacket(typ, flags, body, false); err != nil {
					violation(t, err)
					continue
				}
				switch {
				case typ == packets.Pingresp && len(body) != 0,
					typ == packets.Suback && len(body) < 3,
					typ != packets.Pingresp && typ != packets.Suback && len(body) != 2,
					typ != packets.Pingresp && body[0] == 0 && body[1] == 0:
					t.Fatalf("accepted %s with body %x", packetName(typ), body)
				}
				continue
			}
			if n > 64 {
				id, qos, err := skipPublish(r, flags, n)
				if err != nil {
					violation(t, err)
					return
				}
				if qos > 2 || (qos > 0) != (id != 0) {
					t.Fatalf("skipped PUBLISH with qos %d, id %d", qos, id)
				}
				continue
			}
			topic, id, payload, qos, _, err := parsePublish(flags, body, false)
			if err != nil {
				violation(t, err)
				continue
			}
			parsed := 2 + len(topic) + len(payload)
			if qos > 0 {
				parsed += 2
			}
			if parsed != n || n != len(body) || qos > 2 || topic == "" || (qos > 0) != (id != 0) {
				t.Fatalf("PUBLISH of %d bytes parsed as topic %q, payload %d, qos %d, id %d", len(body), topic, len(payload), qos, id)
			}
		}
	})
}

// FuzzV5Packets feeds the MQTT 5 decoders (properties, CONNACK, PUBLISH,
// acks, SUBACK, DISCONNECT) arbitrary bodies: each returns a result or a
// named protocol violation, never a panic.
func FuzzV5Packets(f *testing.F) {
	f.Add(byte(typeConnack), byte(0), []byte{0, 0, 3, propReceiveMaximum, 0, 2})
	f.Add(byte(typeConnack), byte(0), []byte{0, 1}) // a 3.1.1 broker refusing the version
	f.Add(byte(typePublish), byte(2), []byte{0, 1, 'a', 0, 1, 8, 0x26, 0, 1, 'k', 0, 1, 'v', 0x02, 0, 0, 0, 9, 'p'})
	f.Add(byte(typePuback), byte(0), []byte{0, 1, 0x97, 4, 0x1F, 0, 1, 'r'})
	f.Add(byte(typeSuback), byte(0), []byte{0, 1, 0, 1, 0x87})
	f.Add(byte(typeDisconnect), byte(0), []byte{0x8E, 0})
	f.Add(byte(typePublish), byte(2), []byte{0, 1, 'a', 0, 1, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, typ, flags byte, body []byte) {
		check := func(err error) {
			t.Helper()
			var pe *protocolError
			var re *RefusedError
			if err != nil && !errors.As(err, &pe) && !errors.As(err, &re) && !strings.HasPrefix(err.Error(), "expected CONNACK") {
				t.Fatalf("error %v is not a named protocol violation", err)
			}
		}
		_, _, err := parseProps(body, "FUZZ")
		check(err)
		_, err = checkConnack(typ, len(body), body, true)
		check(err)
		if typ == typePublish {
			topic, _, payload, _, _, err := parsePublish(flags, body, true)
			check(err)
			if err == nil && (topic == "" || len(payload) > len(body)) {
				t.Fatalf("accepted PUBLISH %x as topic %q", body, topic)
			}
			return
		}
		if err := checkPacket(typ, flags, body, true); err != nil {
			check(err)
			return
		}
		switch typ {
		case typeDisconnect:
			_, _, err = parseDisconnect(body)
		case typeSuback:
			_, _, err = subackCodes(body, true)
		default:
			_, _, err = parseAck(typ, body, true)
		}
		check(err)
	})
}
