package mqttc

import (
	"encoding/binary"
	"fmt"
	"time"
)

// MQTT 5 properties (§2.2.2.2) the client reads or writes.
const (
	propPayloadFormat        = 0x01
	propMessageExpiry        = 0x02
	propContentType          = 0x03
	propSessionExpiry        = 0x11
	propAssignedClientID     = 0x12
	propServerKeepAlive      = 0x13
	propReasonString         = 0x1F
	propReceiveMaximum       = 0x21
	propTopicAlias           = 0x23
	propMaximumQoS           = 0x24
	propRetainAvailable      = 0x25
	propUserProperty         = 0x26
	propMaximumPacketSize    = 0x27
	propSharedSubAvailable   = 0x2A
	propWildcardSubAvailable = 0x28
)

// propKind is how a property's value is encoded, by its identifier; 0 for
// an identifier MQTT 5 does not define.
func propKind(id byte) byte {
	switch id {
	case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
		return 'b' // byte
	case 0x13, 0x21, 0x22, 0x23:
		return 'h' // two-byte integer
	case 0x02, 0x11, 0x18, 0x27:
		return 'i' // four-byte integer
	case 0x0B:
		return 'v' // variable byte integer
	case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F:
		return 's' // UTF-8 string
	case 0x09, 0x16:
		return 'd' // binary data
	case 0x26:
		return 'p' // string pair
	}
	return 0
}

// UserProperty is an MQTT 5 user property: a name and a value; a name may
// repeat.
type UserProperty struct {
	Key, Value string
}

// props are the properties of a received packet the client uses.
type props struct {
	expiry         uint32 // message expiry interval, seconds; hasExpiry says if set
	hasExpiry      bool
	contentType    string
	user           []UserProperty
	reason         string // reason string
	receiveMax     uint16 // 0: not set
	serverKeep     uint16
	hasServerKeep  bool
	assignedID     string
	maxQoS         byte
	hasMaxQoS      bool
	sharedSubsOff  bool // shared subscription available = 0
	wildcardSubOff bool
	maxPacket      uint32
}

// readVarint reads a variable byte integer (§1.5.5) from b; n is its
// length, 0 when b ends inside it or it is longer than four bytes.
func readVarint(b []byte) (v, n int) {
	for i := 0; i < 4 && i < len(b); i++ {
		v |= int(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

// parseProps reads a property list (its length first) from b and returns
// what follows it. Every property MQTT 5 defines is checked for its
// length and skipped if the client has no use for it; an unknown one, a
// length beyond b, or a property that may appear once appearing twice is a
// protocolError.
func parseProps(b []byte, packet string) (p props, rest []byte, err error) {
	n, k := readVarint(b)
	if k == 0 {
		return p, nil, violation("%s with a malformed property length", packet)
	}
	b = b[k:]
	if n > len(b) {
		return p, nil, violation("%s with properties of %d bytes in %d", packet, n, len(b))
	}
	list, rest := b[:n], b[n:]
	var seen [256]bool
	for len(list) > 0 {
		id := list[0]
		list = list[1:]
		kind := propKind(id)
		if kind == 0 {
			return p, nil, violation("%s with unknown property %#x", packet, id)
		}
		if seen[id] && id != propUserProperty && id != 0x0B {
			return p, nil, violation("%s with property %#x twice", packet, id)
		}
		seen[id] = true
		var u uint32
		var s1, s2 string
		switch kind {
		case 'b':
			if len(list) < 1 {
				return p, nil, violation("%s: property %#x truncated", packet, id)
			}
			u, list = uint32(list[0]), list[1:]
		case 'h':
			if len(list) < 2 {
				return p, nil, violation("%s: property %#x truncated", packet, id)
			}
			u, list = uint32(binary.BigEndian.Uint16(list)), list[2:]
		case 'i':
			if len(list) < 4 {
				return p, nil, violation("%s: property %#x truncated", packet, id)
			}
			u, list = binary.BigEndian.Uint32(list), list[4:]
		case 'v':
			v, k := readVarint(list)
			if k == 0 {
				return p, nil, violation("%s: property %#x malformed", packet, id)
			}
			u, list = uint32(v), list[k:]
		case 's', 'd', 'p':
			var ok bool
			if s1, list, ok = cutString(list); !ok {
				return p, nil, violation("%s: property %#x truncated", packet, id)
			}
			if kind == 'p' {
				if s2, list, ok = cutString(list); !ok {
					return p, nil, violation("%s: property %#x truncated", packet, id)
				}
			}
		}
		switch id {
		case propMessageExpiry:
			p.expiry, p.hasExpiry = u, true
		case propContentType:
			p.contentType = s1
		case propUserProperty:
			p.user = append(p.user, UserProperty{Key: s1, Value: s2})
		case propReasonString:
			p.reason = s1
		case propReceiveMaximum:
			if u == 0 {
				return p, nil, violation("%s with receive maximum 0", packet)
			}
			p.receiveMax = uint16(u)
		case propServerKeepAlive:
			p.serverKeep, p.hasServerKeep = uint16(u), true
		case propAssignedClientID:
			p.assignedID = s1
		case propMaximumQoS:
			p.maxQoS, p.hasMaxQoS = byte(u), true
		case propSharedSubAvailable:
			p.sharedSubsOff = u == 0
		case propWildcardSubAvailable:
			p.wildcardSubOff = u == 0
		case propMaximumPacketSize:
			p.maxPacket = u
		case propTopicAlias:
			// The client sets no topic alias maximum: none may come (§3.3.2.3.4).
			return p, nil, violation("%s with a topic alias, which the client did not allow", packet)
		}
	}
	return p, rest, nil
}

// cutString cuts a two-byte length and that many bytes off b.
func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(b[0])<<8 | int(b[1])
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// appendPublishProps appends the property list of an outgoing PUBLISH.
func appendPublishProps(b []byte, expiry time.Duration, user []UserProperty) []byte {
	n := 0
	if expiry > 0 {
		n += 5
	}
	for _, u := range user {
		n += 1 + stringLen(u.Key) + stringLen(u.Value)
	}
	b = appendLength(b, n)
	if expiry > 0 {
		b = append(b, propMessageExpiry)
		b = binary.BigEndian.AppendUint32(b, expirySeconds(expiry))
	}
	for _, u := range user {
		b = append(b, propUserProperty)
		b = appendString(b, u.Key)
		b = appendString(b, u.Value)
	}
	return b
}

// publishPropsLen is the encoded length of appendPublishProps' list, its
// length included.
func publishPropsLen(expiry time.Duration, user []UserProperty) int {
	n := 0
	if expiry > 0 {
		n += 5
	}
	for _, u := range user {
		n += 1 + stringLen(u.Key) + stringLen(u.Value)
	}
	return varintLen(n) + n
}

// expirySeconds rounds d up to whole seconds, at most 2^32-1.
func expirySeconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, 1<<32-1))
}

func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}

// reasonNames name the MQTT 5 reason codes (§2.4) the client may receive.
var reasonNames = map[byte]string{
	0x00: "success", 0x01: "granted QoS 1", 0x02: "granted QoS 2", 0x04: "disconnect with will message",
	0x10: "no matching subscribers", 0x11: "no subscription existed",
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error", 0x83: "implementation specific error",
	0x84: "unsupported protocol version", 0x85: "client identifier not valid", 0x86: "bad user name or password",
	0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
	0x8B: "server shutting down", 0x8C: "bad authentication method", 0x8D: "keep alive timeout",
	0x8E: "session taken over", 0x8F: "topic filter invalid", 0x90: "topic name invalid",
	0x91: "packet identifier in use", 0x92: "packet identifier not found", 0x93: "receive maximum exceeded",
	0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high", 0x97: "quota exceeded",
	0x98: "administrative action", 0x99: "payload format invalid", 0x9A: "retain not supported",
	0x9B: "QoS not supported", 0x9C: "use another server", 0x9D: "server moved",
	0x9E: "shared subscriptions not supported", 0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}

// ReasonError is an MQTT 5 reason code of failure (0x80 and above) that the
// broker answered a request with, or closed the connection with
// (DISCONNECT), and its reason string if it gave one.
type ReasonError struct {
	Packet string // PUBACK, PUBREC, PUBCOMP, SUBACK, DISCONNECT
	Code   byte
	Reason string // the broker's reason string; may be empty
	Filter string // SUBACK: the topic filter refused
}

func (e *ReasonError) Error() string {
	name := reasonNames[e.Code]
	if name == "" {
		name = "unknown reason"
	}
	s := fmt.Sprintf("mqtt: %s reason code %#x (%s)", e.Packet, e.Code, name)
	if e.Filter != "" {
		s = fmt.Sprintf("mqtt: broker refused subscription %q: reason code %#x (%s)", e.Filter, e.Code, name)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// TooLargeError is a message PublishAsync did not send because its packet
// is over the broker's Maximum Packet Size (MQTT 5, CONNACK): the broker
// would close the connection on it (§3.2.2.3.6).
type TooLargeError struct {
	Topic string
	Size  int // the packet's bytes
	Max   int // the broker's Maximum Packet Size
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("mqtt: publish to %q: a packet of %d bytes, over the broker's Maximum Packet Size %d (CONNACK)", e.Topic, e.Size, e.Max)
}
