package mqttc

// What the external tests (package mqttc_test) need from inside the
// package: they use the scripted broker of mqtttest, which imports mqttc,
// so they cannot be in package mqttc themselves.

// ErrDisconnected fails a request cut short by Disconnect.
var ErrDisconnected = errDisconnected

// CauseTakeover is the loss cause of a session taken over.
const CauseTakeover = causeTakeover

// MQTT 5 property identifiers of a CONNACK.
const (
	PropReceiveMaximum    = propReceiveMaximum
	PropMaximumPacketSize = propMaximumPacketSize
)

// PublishLen is the length of a PUBLISH packet, fixed header included.
var PublishLen = publishLen
