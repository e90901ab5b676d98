package serial

import (
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the serial source's config.
type Config struct {
	Device       string `yaml:"device" required:"true" doc:"device path; prefer a stable name like /dev/serial/by-id/... over /dev/ttyUSB0"`
	Baud         int    `yaml:"baud" min:"50" max:"4000000" doc:"bits per second"`
	DataBits     int    `yaml:"data_bits" doc:"5, 6, 7 or 8"`
	Parity       string `yaml:"parity" enum:"none,odd,even,mark,space" doc:"parity bit"`
	StopBits     string `yaml:"stop_bits" enum:"1,1.5,2" doc:"stop bits"`
	Framing      string `yaml:"framing" enum:"line,fixed,length_prefix" doc:"how the byte stream splits into frames"`
	Delimiter    string `yaml:"delimiter" doc:"line framing: the delimiter, e.g. \"\\n\" or \"\\r\\n\" (YAML double quotes)"`
	TrimCR       bool   `yaml:"trim_cr" doc:"line framing: drop one trailing \\r from each frame"`
	FrameSize    int    `yaml:"frame_size" doc:"fixed framing: bytes per frame"`
	LengthBytes  int    `yaml:"length_bytes" doc:"length_prefix framing: 1, 2 or 4 byte prefix"`
	LengthEndian string `yaml:"length_endian" enum:"big,little" doc:"length_prefix framing: byte order of the prefix"`
	// MaxFrame is the framer's buffer, allocated once: its cap bounds
	// memory.
	MaxFrame  agent.ByteSize `yaml:"max_frame" min:"1B" max:"1MiB" doc:"longer frames are dropped and counted; the framer's buffer is this big"`
	Poll      PollConfig     `yaml:"poll" doc:"a command written at an interval, for request/response sensors"`
	BatchSize int            `yaml:"batch_size" min:"1" max:"65536" doc:"most frames per batch"`
	// BatchBytes bounds a batch in bytes: with max_unacked it bounds the
	// memory of frames read but not yet durable.
	BatchBytes agent.ByteSize  `yaml:"batch_bytes" min:"1KiB" max:"16MiB" doc:"a batch ends once its frames hold this many bytes; memory for unacked frames stays below max_unacked × (batch_bytes + max_frame)"`
	Linger     time.Duration   `yaml:"linger" max:"1s" doc:"how long a batch waits for more frames after its first"`
	MaxUnacked int             `yaml:"max_unacked" min:"1" max:"1024" doc:"batches read but not yet durable before reading pauses"`
	Reconnect  ReconnectConfig `yaml:"reconnect" doc:"backoff between attempts to reopen a device that went away"`
}

// PollConfig is a command written to the device at an interval.
type PollConfig struct {
	Command  string        `yaml:"command" doc:"bytes to write, e.g. \"READ\\r\\n\"; empty disables polling"`
	Interval time.Duration `yaml:"interval" doc:"time between commands"`
}

// ReconnectConfig is the exponential backoff with jitter between reopen attempts.
type ReconnectConfig struct {
	Initial time.Duration `yaml:"initial" doc:"first wait"`
	Max     time.Duration `yaml:"max" doc:"longest wait"`
}

// Defaults returns the config's defaults: 9600 8N1, newline-delimited lines.
func Defaults() *Config {
	return &Config{
		Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1",
		Framing: "line", Delimiter: "\n", TrimCR: true, LengthBytes: 2, LengthEndian: "big",
		MaxFrame: 1 << 10, Poll: PollConfig{Interval: time.Second},
		BatchSize: 100, BatchBytes: 64 << 10, Linger: 20 * time.Millisecond, MaxUnacked: 8,
		Reconnect: ReconnectConfig{Initial: 500 * time.Millisecond, Max: 10 * time.Second},
	}
}

// Validate checks the config beyond its fields' tags.
func (c *Config) Validate(n agent.Node) {
	if c.DataBits < 5 || c.DataBits > 8 {
		n.Field("data_bits").Errorf("must be 5, 6, 7 or 8, got %q", n.Field("data_bits").Text())
	}
	switch c.Framing {
	case "line":
		if c.Delimiter == "" || len(c.Delimiter) > 8 {
			n.Field("delimiter").Errorf("must be 1 to 8 bytes, got %q", n.Field("delimiter").Text())
		}
	case "fixed":
		if c.FrameSize < 1 || c.FrameSize > int(c.MaxFrame) {
			n.Field("frame_size").Errorf("must be between 1 and max_frame (%d), got %q", c.MaxFrame, n.Field("frame_size").Text())
		}
	case "length_prefix":
		if c.LengthBytes != 1 && c.LengthBytes != 2 && c.LengthBytes != 4 {
			n.Field("length_bytes").Errorf("must be 1, 2 or 4, got %q", n.Field("length_bytes").Text())
		}
	}
	if c.Poll.Command != "" && c.Poll.Interval < 10*time.Millisecond {
		n.Field("poll").Field("interval").Errorf("must be at least 10ms, got %q", n.Field("poll").Field("interval").Text())
	}
	if c.Reconnect.Initial <= 0 || c.Reconnect.Max < c.Reconnect.Initial {
		n.Field("reconnect").Errorf("needs 0 < initial <= max, got initial %s, max %s", c.Reconnect.Initial, c.Reconnect.Max)
	}
}

// Factory returns the registry entry of the serial source.
func Factory() agent.Factory[agent.Source] {
	return agent.Typed[agent.Source]("reads frames from a serial port: lines, fixed size or length-prefixed; survives unplugging",
		Defaults, func(c *Config, env agent.Env) (agent.Source, error) { return New(*c, env), nil })
}
