//go:build no_kafka

package fleet

// kafkaLeftOut is the build tag that left the Kafka channel out of this
// binary, with the Kafka source and sink (and franz-go).
const kafkaLeftOut = "no_kafka"

// newKafka refuses: the Kafka channel is not in this binary.
func newKafka(KafkaConfig, Deps) (channelPublisher, error) {
	return nil, leftOutError(ChannelKafka)
}
