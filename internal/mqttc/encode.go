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
// code (MQTT 3.1.1 §3.2.2.3) or reason code (MQTT 5 §3.2.2.2, 0x80 and
// above) and the MQTT 5 reason string.
type RefusedError struct {
	Code   byte
	V5     bool
	Reason string
}

var refusedReasons = map[byte]string{
	1: "unacceptable protocol version",
	2: "identifier rejected",
	3: "server unavailable",
	4: "bad user name or password",
	5: "not authorized",
}

func (e *RefusedError) Error() string {
	if e.V5 {
		name := reasonNames[e.Code]
		if name == "" {
			name = "unknown reason"
		}
		s := fmt.Sprintf("connection refused: %s (reason code %#x)", name, e.Code)
		if e.Reason != "" {
			s += ": " + e.Reason
		}
		return s
	}
	if r, ok := refusedReasons[e.Code]; ok {
		return fmt.Sprintf("connection refused: %s (return code %d)", r, e.Code)
	}
	return fmt.Sprintf("connection refused with return code %d", e.Code)
}

// Setup reports whether retrying the same config cannot cure the refusal:
// credentials, authorisation, client id or protocol version (a broker that
// is unavailable, busy, shutting down or rate-limiting is an outage
// instead).
func (e *RefusedError) Setup() bool {
	if !e.V5 {
		return e.Code != 3
	}
	switch e.Code {
	case 0x80, 0x83, 0x88, 0x89, 0x8B, 0x9C, 0x9D, 0x9F:
		return false
	}
	return true
}

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

// connectPacket encodes a CONNECT (§3.1) with o's settings, under MQTT 5
// (o.ProtocolVersion 5) with its properties: a session expiry that keeps a
// persistent session as 3.1.1 does (clean_session false: it never expires
// on the protocol's account) and o.ReceiveMaximum.
func connectPacket(o *Options, user, pass string) []byte {
	v5 := o.ProtocolVersion == 5
	var flags byte
	n := 10 + stringLen(o.ClientID)
	var cprops []byte
	if v5 {
		if !o.CleanSession {
			cprops = append(cprops, propSessionExpiry, 0xff, 0xff, 0xff, 0xff)
		}
		if o.ReceiveMaximum > 0 {
			cprops = append(cprops, propReceiveMaximum, byte(o.ReceiveMaximum>>8), byte(o.ReceiveMaximum))
		}
		n += varintLen(len(cprops)) + len(cprops)
	}
	if o.CleanSession {
		flags |= 0x02
	}
	w := o.Will
	if w != nil {
		flags |= 0x04 | w.QoS<<3
		if w.Retain {
			flags |= 0x20
		}
		n += stringLen(w.Topic) + stringLen(w.Payload)
		if v5 {
			n++ // no will properties
		}
	}
	if user != "" {
		flags |= 0x80
		n += stringLen(user)
	}
	if pass != "" {
		flags |= 0x40
		n += stringLen(pass)
	}
	ka := min(o.KeepAlive/time.Second, 65535)
	level := byte(4)
	if v5 {
		level = 5
	}
	b := make([]byte, 0, 5+n)
	b = append(b, typeConnect<<4)
	b = appendLength(b, n)
	b = appendString(b, "MQTT")
	b = append(b, level, flags, byte(ka>>8), byte(ka))
	if v5 {
		b = appendLength(b, len(cprops))
		b = append(b, cprops...)
	}
	b = appendString(b, o.ClientID)
	if w != nil {
		if v5 {
			b = append(b, 0)
		}
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

// Publication is a message to publish.
type Publication struct {
	Topic   string
	QoS     byte
	Retain  bool
	Payload []byte
	// Expiry is the message expiry interval (MQTT 5; rounded up to whole
	// seconds): the broker drops the message once it has waited this long
	// for a subscriber. 0 for none. Ignored under 3.1.1.
	Expiry time.Duration
	// User are user properties (MQTT 5), sent in order. Ignored under
	// 3.1.1.
	User []UserProperty
}

// publishLen is the length of p's PUBLISH packet, fixed header included.
func publishLen(v5 bool, p *Publication) int {
	n := stringLen(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v5 {
		n += publishPropsLen(p.Expiry, p.User)
	}
	return 1 + varintLen(n) + n
}

// publishPacket encodes a PUBLISH (§3.3); id is used with QoS 1 and 2,
// and the properties under MQTT 5.
func publishPacket(v5 bool, p *Publication, id uint16) []byte {
	n := stringLen(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v5 {
		n += publishPropsLen(p.Expiry, p.User)
	}
	first := byte(typePublish<<4) | p.QoS<<1
	if p.Retain {
		first |= 1
	}
	b := make([]byte, 0, 5+n)
	b = append(b, first)
	b = appendLength(b, n)
	b = appendString(b, p.Topic)
	if p.QoS > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	if v5 {
		b = appendPublishProps(b, p.Expiry, p.User)
	}
	return append(b, p.Payload...)
}

// subscribePacket encodes a SUBSCRIBE (§3.8) of filters with their QoS;
// under MQTT 5 with no properties and the other subscription options at
// their defaults (retained messages sent at subscribe, no local off).
func subscribePacket(v5 bool, id uint16, filters []string, qos []byte) []byte {
	n := 2
	if v5 {
		n++
	}
	for _, f := range filters {
		n += stringLen(f) + 1
	}
	b := make([]byte, 0, 5+n)
	b = append(b, typeSubscribe<<4|2)
	b = appendLength(b, n)
	b = append(b, byte(id>>8), byte(id))
	if v5 {
		b = append(b, 0)
	}
	for i, f := range filters {
		b = appendString(b, f)
		b = append(b, qos[i])
	}
	return b
}
