// Package fleet configures a fleet of agents with signed pipeline bundles
// and reports their state with heartbeats (docs/fleet.md).
//
// A bundle (Sign, Decode) is a set of pipeline files with a version and an
// ed25519 signature. An Applier verifies a bundle against the agent's
// Keyring, refuses an older version than the highest it has applied
// (replay), validates every file as the supervisor would, refuses to
// overwrite files edited on the gateway (unless the bundle wins), and
// writes the files atomically into the pipelines directory, where the
// supervisor's hot reload applies them; it keeps the previous bundle, to
// go back to. An Agent takes the bundles of its targets (all, name/NAME,
// LABEL/VALUE) from a Channel (an HTTPS URL polled with If-None-Match, an
// MQTT retained topic, a compacted Kafka topic) and rolls a bundle back
// when its pipelines are not up within the grace period. Heartbeats sends
// the agent's status through a sink, in a pipeline of its own.
package fleet
