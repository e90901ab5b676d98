//go:build no_mqtt

package fleet

// mqttLeftOut is the build tag that left the MQTT channel out of this
// binary, with the MQTT source and sink.
const mqttLeftOut = "no_mqtt"

// newMQTT refuses: the MQTT channel is not in this binary.
func newMQTT(MQTTConfig, Deps) (channelPublisher, error) {
	return nil, leftOutError(ChannelMQTT)
}
