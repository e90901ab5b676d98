package mqtt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// readPacket reads one MQTT control packet: its type, the flags of its
// first byte, the length of its body (the variable header and payload) and,
// when that length is at most limit, the body itself, freshly allocated so
// that a message may keep it. A longer body is left unread for the caller
// (see skipPublish): limit bounds the memory a broker can make us take.
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
			return 0, 0, 0, nil, errors.New("malformed remaining length")
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

// noEOF turns an end of stream inside a packet into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parsePublish splits a PUBLISH body. The payload aliases body.
func parsePublish(flags byte, body []byte) (topic string, id uint16, payload []byte, qos byte, err error) {
	qos = flags >> 1 & 3
	if qos == 3 {
		return "", 0, nil, 0, errors.New("mqtt: PUBLISH with QoS 3")
	}
	if len(body) < 2 {
		return "", 0, nil, 0, fmt.Errorf("mqtt: PUBLISH of %d bytes", len(body))
	}
	end := 2 + (int(body[0])<<8 | int(body[1])) // where the topic ends
	if qos > 0 {
		if len(body) < end+2 {
			return "", 0, nil, 0, fmt.Errorf("mqtt: PUBLISH of %d bytes with a topic of %d", len(body), end-2)
		}
		return string(body[2:end]), uint16(body[end])<<8 | uint16(body[end+1]), body[end+2:], qos, nil
	}
	if len(body) < end {
		return "", 0, nil, 0, fmt.Errorf("mqtt: PUBLISH of %d bytes with a topic of %d", len(body), end-2)
	}
	return string(body[2:end]), 0, body[end:], qos, nil
}

// skipPublish reads past the n-byte body of a PUBLISH that readPacket left
// unread, keeping only its packet id and QoS, so that it can be acked and
// dropped.
func skipPublish(r *bufio.Reader, flags byte, n int) (id uint16, qos byte, err error) {
	qos = flags >> 1 & 3
	if qos == 3 {
		return 0, 0, errors.New("mqtt: PUBLISH with QoS 3")
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
		return 0, 0, fmt.Errorf("mqtt: PUBLISH of %d bytes with a topic of %d", n, skip)
	}
	if _, err := r.Discard(skip); err != nil {
		return 0, 0, noEOF(err)
	}
	if qos > 0 {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return 0, 0, noEOF(err)
		}
		id = uint16(hdr[0])<<8 | uint16(hdr[1])
	}
	if _, err := r.Discard(n - head); err != nil {
		return 0, 0, noEOF(err)
	}
	return id, qos, nil
}
