package mqttc

import (
	"fmt"
	"time"
)

// Control packet types (MQTT 3.1.1 §2.2.1).
const (
	typeConnect     = 1
	typeConnack     = 2
	typePublish     = 3
	typePuback      = 4
	typePubrec      = 5
	typePubrel      = 6
	typePubcomp     = 7
	typeSubscribe   = 8
	typeSuback      = 9
	typeUnsubscribe = 10
	typeUnsuback    = 11
	typePingreq     = 12
	typePingresp    = 13
	typeDisconnect  = 14
)

var packetNames = [...]string{"", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
	"SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT"}

// packetName names a packet type for errors.
func packetName(typ byte) string {
	if int(typ) < len(packetNames) && typ != 0 {
		return packetNames[typ]
	}
	return fmt.Sprintf("packet type %d", typ)
}

// RefusedError is a CONNACK that refused the connection, with its return
// code (MQTT 3.1.1 §3.2.2.3).
type RefusedError struct {
	Code byte
}

var refusedReasons = map[byte]string{
	1: "unacceptable protocol version",
	2: "identifier rejected",
	3: "server unavailable",
	4: "bad user name or password",
	5: "not authorized",
}

func (e *RefusedError) Error() string {
	if r, ok := refusedReasons[e.Code]; ok {
		return fmt.Sprintf("connection refused: %s (return code %d)", r, e.Code)
	}
	return fmt.Sprintf("connection refused with return code %d", e.Code)
}

// Setup reports whether retrying the same config cannot cure the refusal:
// credentials, authorisation, client id or protocol version (a broker that
// is unavailable is an outage instead).
func (e *RefusedError) Setup() bool { return e.Code != 3 }

// appendLength appends an MQTT variable byte integer (a remaining length).
func appendLength(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// appendString appends an MQTT UTF-8 string or binary data: a two-byte
// length and the bytes.
func appendString[S string | []byte](b []byte, s S) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// stringLen is the encoded length of s.
func stringLen[S string | []byte](s S) int { return 2 + len(s) }

// Will is the last-will message the broker publishes when the connection
// ends without a DISCONNECT.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// connectPacket encodes a CONNECT (§3.1).
func connectPacket(clientID, user, pass string, clean bool, keepAlive time.Duration, w *Will) []byte {
	var flags byte
	n := 10 + stringLen(clientID)
	if clean {
		flags |= 0x02
	}
	if w != nil {
		flags |= 0x04 | w.QoS<<3
		if w.Retain {
			flags |= 0x20
		}
		n += stringLen(w.Topic) + stringLen(w.Payload)
	}
	if user != "" {
		flags |= 0x80
		n += stringLen(user)
	}
	if pass != "" {
		flags |= 0x40
		n += stringLen(pass)
	}
	ka := min(keepAlive/time.Second, 65535)
	b := make([]byte, 0, 5+n)
	b = append(b, typeConnect<<4)
	b = appendLength(b, n)
	b = appendString(b, "MQTT")
	b = append(b, 4, flags, byte(ka>>8), byte(ka))
	b = appendString(b, clientID)
	if w != nil {
		b = appendString(b, w.Topic)
		b = appendString(b, w.Payload)
	}
	if user != "" {
		b = appendString(b, user)
	}
	if pass != "" {
		b = appendString(b, pass)
	}
	return b
}

// publishPacket encodes a PUBLISH (§3.3); id is used with QoS 1 and 2.
func publishPacket(topic string, qos byte, retain bool, id uint16, payload []byte) []byte {
	n := stringLen(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	first := byte(typePublish<<4) | qos<<1
	if retain {
		first |= 1
	}
	b := make([]byte, 0, 5+n)
	b = append(b, first)
	b = appendLength(b, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	return append(b, payload...)
}

// subscribePacket encodes a SUBSCRIBE (§3.8) of filters with their QoS.
func subscribePacket(id uint16, filters []string, qos []byte) []byte {
	n := 2
	for _, f := range filters {
		n += stringLen(f) + 1
	}
	b := make([]byte, 0, 5+n)
	b = append(b, typeSubscribe<<4|2)
	b = appendLength(b, n)
	b = append(b, byte(id>>8), byte(id))
	for i, f := range filters {
		b = appendString(b, f)
		b = append(b, qos[i])
	}
	return b
}
