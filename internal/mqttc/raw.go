package mqttc

import "bufio"

// The three functions below expose the client's own packet framing to the
// scripted brokers of tests (internal/mqttc/mqtttest and the tests that
// use it), which read what a client sends and write what a broker would:
// one codec for both sides instead of a copy in every test package. The
// client itself does not call them.

// ReadPacket reads one MQTT control packet from r: its type, the flags of
// its first byte, the length of its body (the variable header and
// payload) and, when that length is at most limit, the body itself,
// freshly allocated. A longer body is left unread in r. The stream ending
// before a packet is io.EOF; inside one, or a remaining length of more
// than four bytes, is an error naming the protocol violation.
func ReadPacket(r *bufio.Reader, limit int) (typ, flags byte, n int, body []byte, err error) {
	return readPacket(r, limit)
}

// ParsePublish splits the body of a PUBLISH whose first byte had flags:
// its topic, packet id (0 under QoS 0), payload (aliasing body) and QoS.
// Under MQTT 5 (v5) the properties are checked and skipped. A malformed
// PUBLISH is an error naming the violation.
func ParsePublish(flags byte, body []byte, v5 bool) (topic string, id uint16, payload []byte, qos byte, err error) {
	topic, id, payload, qos, _, err = parsePublish(flags, body, v5)
	return topic, id, payload, qos, err
}

// EncodePublish encodes p as a whole PUBLISH packet with packet id id
// (used under QoS 1 and 2), with p's properties under MQTT 5 (v5).
func EncodePublish(v5 bool, p *Publication, id uint16) []byte {
	return publishPacket(v5, p, id)
}
