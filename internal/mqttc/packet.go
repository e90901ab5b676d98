package mqttc

import (
	"bufio"
	"fmt"
	"io"
)

// protocolError is a packet from the broker that breaks MQTT 3.1.1. The
// client closes the connection on it (§4.8) and names it.
type protocolError struct {
	what string
	err  error // the underlying error, if any
}

func (e *protocolError) Error() string { return "mqtt: protocol violation by the broker: " + e.what }
func (e *protocolError) Unwrap() error { return e.err }

func violation(format string, args ...any) error {
	return &protocolError{what: fmt.Sprintf(format, args...)}
}

// errTruncated is a connection that ended inside a packet.
var errTruncated = &protocolError{what: "truncated packet (the connection ended inside it)", err: io.ErrUnexpectedEOF}

// readPacket reads one MQTT control packet: its type, the flags of its
// first byte, the length of its body (the variable header and payload) and,
// when that length is at most limit, the body itself, freshly allocated so
// that a message may keep it. A longer body is left unread for the caller
// (see skipPublish): limit bounds the memory a broker can make us take.
// The stream ending before a packet is io.EOF; inside one, or a remaining
// length of more than four bytes, is a protocolError.
func readPacket(r *bufio.Reader, limit int) (typ, flags byte, n int, body []byte, err error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, 0, 0, nil, noEOF(err)
		}
		n |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, 0, 0, nil, violation("malformed remaining length (more than 4 bytes)")
		}
	}
	typ, flags = first>>4, first&0x0f
	if n == 0 || n > limit {
		return typ, flags, n, nil, nil
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, 0, nil, noEOF(err)
	}
	return typ, flags, n, body, nil
}

// noEOF turns an end of stream inside a packet into errTruncated.
func noEOF(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errTruncated
	}
	return err
}

// checkConnack checks the answer to our CONNECT and returns its MQTT 5
// properties: a CONNACK of the right length (3.1.1: 2 bytes; MQTT 5: flags,
// reason code and properties), a return or reason code of success (else a
// *RefusedError).
// errConnack311 is an MQTT 5 CONNECT accepted in 3.1.1's CONNACK (two
// bytes, no properties): a 3.1.1 broker that did not check the protocol
// level. Under ProtocolAuto it may be a refusal of MQTT 5 (see
// versionRefused).
var errConnack311 = violation("an MQTT 3.1.1 CONNACK (2 bytes, no properties) in answer to an MQTT 5 CONNECT")

func checkConnack(typ byte, n int, body []byte, v5 bool) (props, error) {
	if v5 && typ == typeConnack && len(body) == 2 && body[1] != 0 {
		// A refusal without properties: a 3.1.1 broker's return code
		// (0x01: unacceptable protocol version), or an MQTT 5 reason code
		// sent in 3.1.1's format, as a server may to a level it does not
		// speak (§3.1.2.2).
		return props{}, &RefusedError{Code: body[1], V5: body[1] >= 0x80}
	}
	if v5 && typ == typeConnack && len(body) == 2 {
		return props{}, errConnack311
	}
	if typ != typeConnack || body == nil || !v5 && len(body) != 2 || v5 && len(body) < 3 {
		return props{}, fmt.Errorf("expected CONNACK, got %s of %d bytes", packetName(typ), n)
	}
	if !v5 {
		if body[1] != 0 {
			return props{}, &RefusedError{Code: body[1]}
		}
		return props{}, nil
	}
	p, _, err := parseProps(body[2:], "CONNACK")
	if err != nil {
		return props{}, err
	}
	if body[1] >= 0x80 {
		return props{}, &RefusedError{Code: body[1], V5: true, Reason: p.reason}
	}
	if body[1] != 0 {
		return props{}, violation("CONNACK with reason code %#x", body[1])
	}
	return p, nil
}

// checkPacket checks a packet other than PUBLISH as a client may receive
// it once connected: a type the server sends (CONNACK only answers the
// CONNECT; DISCONNECT only under MQTT 5), the fixed flags of its first byte
// (§2.2.2), its length, and a non-zero packet id where it has one
// (§2.3.1). Under MQTT 5 an ack may carry a reason code and properties
// (see parseAck).
func checkPacket(typ, flags byte, body []byte, v5 bool) error {
	var wantFlags byte
	switch typ {
	case typePuback, typePubrec, typePubcomp, typeUnsuback, typeSuback, typePingresp:
	case typePubrel:
		wantFlags = 2
	case typeDisconnect:
		if !v5 {
			return violation("unexpected DISCONNECT from the broker")
		}
	case typeConnect, typeConnack, typePublish, typeSubscribe, typeUnsubscribe, typePingreq:
		return violation("unexpected %s from the broker", packetName(typ))
	default:
		return violation("unknown packet type %d", typ)
	}
	if flags != wantFlags {
		return violation("%s with flags %#x, want %#x (§2.2.2)", packetName(typ), flags, wantFlags)
	}
	switch typ {
	case typeDisconnect:
		return nil
	case typePingresp:
		if len(body) != 0 {
			return violation("PINGRESP of %d bytes, want 0", len(body))
		}
		return nil
	case typeSuback:
		if len(body) < 3 {
			return violation("SUBACK of %d bytes, want at least 3", len(body))
		}
		if !v5 {
			for _, code := range body[2:] {
				if code > 2 && code != 0x80 {
					return violation("SUBACK with return code %#x", code)
				}
			}
		}
	default:
		if !v5 && len(body) != 2 || v5 && len(body) < 2 {
			return violation("%s of %d bytes, want 2", packetName(typ), len(body))
		}
	}
	if body[0] == 0 && body[1] == 0 {
		return violation("%s with packet id 0 (§2.3.1)", packetName(typ))
	}
	return nil
}

// parseAck returns the reason code and reason string of a PUBACK, PUBREC,
// PUBREL or PUBCOMP that checkPacket passed: under MQTT 5 the code follows
// the packet id (0, success, when absent) and properties may follow it.
func parseAck(typ byte, body []byte, v5 bool) (code byte, reason string, err error) {
	if !v5 || typ == typeSuback || typ == typeUnsuback || len(body) < 3 {
		return 0, "", nil
	}
	code = body[2]
	if _, ok := reasonNames[code]; !ok {
		return 0, "", violation("%s with unknown reason code %#x", packetName(typ), code)
	}
	if len(body) > 3 {
		p, rest, err := parseProps(body[3:], packetName(typ))
		if err != nil {
			return 0, "", err
		}
		if len(rest) != 0 {
			return 0, "", violation("%s with %d bytes after its properties", packetName(typ), len(rest))
		}
		reason = p.reason
	}
	return code, reason, nil
}

// subackCodes returns a SUBACK's return codes (MQTT 5: reason codes, after
// its properties) and its reason string.
func subackCodes(body []byte, v5 bool) ([]byte, string, error) {
	if !v5 {
		return body[2:], "", nil
	}
	p, codes, err := parseProps(body[2:], "SUBACK")
	if err != nil {
		return nil, "", err
	}
	if len(codes) == 0 {
		return nil, "", violation("SUBACK without reason codes")
	}
	for _, code := range codes {
		if _, ok := reasonNames[code]; !ok || code > 2 && code < 0x80 {
			return nil, "", violation("SUBACK with reason code %#x", code)
		}
	}
	return codes, p.reason, nil
}

// parseDisconnect returns the reason code and reason string of an MQTT 5
// DISCONNECT from the broker (§3.14): no body is 0, a normal disconnect.
func parseDisconnect(body []byte) (code byte, reason string, err error) {
	if len(body) == 0 {
		return 0, "", nil
	}
	code = body[0]
	if len(body) > 1 {
		p, rest, err := parseProps(body[1:], "DISCONNECT")
		if err != nil {
			return 0, "", err
		}
		if len(rest) != 0 {
			return 0, "", violation("DISCONNECT with %d bytes after its properties", len(rest))
		}
		reason = p.reason
	}
	return code, reason, nil
}

// parsePublish splits a PUBLISH body. The payload aliases body. A QoS of 3,
// a topic longer than the packet or empty (§4.7.3; MQTT 5 would allow it
// with a topic alias, which the client does not allow), or a packet id of 0
// on QoS 1 or 2 (§2.3.1) is a protocolError. Under MQTT 5 the properties
// follow the packet id.
func parsePublish(flags byte, body []byte, v5 bool) (topic string, id uint16, payload []byte, qos byte, p props, err error) {
	qos = flags >> 1 & 3
	if qos == 3 {
		return "", 0, nil, 0, p, violation("PUBLISH with QoS 3")
	}
	if len(body) < 2 {
		return "", 0, nil, 0, p, violation("PUBLISH of %d bytes", len(body))
	}
	n := int(body[0])<<8 | int(body[1])
	end := 2 + n // where the topic ends
	head := end
	if qos > 0 {
		head += 2
	}
	if len(body) < head {
		return "", 0, nil, 0, p, violation("PUBLISH of %d bytes with a topic of %d bytes", len(body), n)
	}
	if n == 0 {
		return "", 0, nil, 0, p, violation("PUBLISH with an empty topic")
	}
	if qos > 0 {
		id = uint16(body[end])<<8 | uint16(body[end+1])
		if id == 0 {
			return "", 0, nil, 0, p, violation("PUBLISH QoS %d with packet id 0 (§2.3.1)", qos)
		}
	}
	payload = body[head:]
	if v5 {
		if p, payload, err = parseProps(payload, "PUBLISH"); err != nil {
			return "", 0, nil, 0, p, err
		}
	}
	return string(body[2:end]), id, payload, qos, p, nil
}

// skipPublish reads past the n-byte body of a PUBLISH that readPacket left
// unread, keeping only its packet id and QoS, so that it can be acked and
// dropped. It checks what it reads as parsePublish does.
func skipPublish(r *bufio.Reader, flags byte, n int) (id uint16, qos byte, err error) {
	qos = flags >> 1 & 3
	if qos == 3 {
		return 0, 0, violation("PUBLISH with QoS 3")
	}
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, noEOF(err)
	}
	skip := int(hdr[0])<<8 | int(hdr[1])
	head := 2 + skip
	if qos > 0 {
		head += 2
	}
	if n < head {
		return 0, 0, violation("PUBLISH of %d bytes with a topic of %d bytes", n, skip)
	}
	if skip == 0 {
		return 0, 0, violation("PUBLISH with an empty topic")
	}
	if _, err := r.Discard(skip); err != nil {
		return 0, 0, noEOF(err)
	}
	if qos > 0 {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, 0, noEOF(err)
		}
		id = uint16(hdr[0])<<8 | uint16(hdr[1])
		if id == 0 {
			return 0, 0, violation("PUBLISH QoS %d with packet id 0 (§2.3.1)", qos)
		}
	}
	if _, err := r.Discard(n - head); err != nil {
		return 0, 0, noEOF(err)
	}
	return id, qos, nil
}
