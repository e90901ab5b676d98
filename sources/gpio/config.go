package gpio

import (
	"strconv"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the GPIO source's config.
type Config struct {
	Pins       []PinConfig   `yaml:"pins" doc:"the input pins to watch"`
	BatchSize  int           `yaml:"batch_size" min:"1" max:"65536" doc:"most records per batch"`
	Linger     time.Duration `yaml:"linger" max:"1s" doc:"how long a batch waits for more records after its first"`
	MaxUnacked int           `yaml:"max_unacked" min:"1" max:"1024" doc:"batches read but not yet durable before Read pauses"`
	Queue      int           `yaml:"queue" min:"1" max:"1048576" doc:"records waiting to be read; beyond it new ones are dropped and counted"`
}

// PinConfig is one input pin: which line, how to read it, and the name its
// records carry.
type PinConfig struct {
	Name  string `yaml:"name" doc:"line name as the kernel or board knows it: GPIO17, or a gpio-sim line name; or use chip and line"`
	Chip  string `yaml:"chip" doc:"GPIO chip by device name (gpiochip0) or label (pinctrl-bcm2711), with line"`
	Line  int    `yaml:"line" min:"0" doc:"line offset on chip"`
	Alias string `yaml:"alias" doc:"the pin field and key of its records; default: name, or chip/line"`
	Mode  string `yaml:"mode" enum:"edge,level,counter" doc:"edge: a record per debounced change; level: the level every interval; counter: pulses per interval"`
	Edge  string `yaml:"edge" enum:"rising,falling,both" doc:"edge and counter: which transitions count"`
	Pull  string `yaml:"pull" enum:"up,down,none" doc:"bias resistor; none leaves it as it is (needed for gpio-sim, where a pull request moves the simulated level)"`
	// Debounce is at most 1s: longer would hide real changes of a switch;
	// a slow signal wants level mode.
	Debounce time.Duration `yaml:"debounce" max:"1s" doc:"edge and counter: a change counts once the line has been quiet this long (chattering contacts)"`
	Interval time.Duration `yaml:"interval" doc:"level and counter: how often a record is made"`
}

// Defaults returns the config's defaults.
func Defaults() *Config {
	return &Config{BatchSize: 100, Linger: 10 * time.Millisecond, MaxUnacked: 8, Queue: 4096}
}

// fill sets what a pin entry left out.
func (p *PinConfig) fill() {
	if p.Mode == "" {
		p.Mode = "edge"
	}
	if p.Edge == "" {
		p.Edge = "both"
	}
	if p.Pull == "" {
		p.Pull = "none"
	}
	if p.Interval == 0 {
		p.Interval = time.Second
	}
	if p.Alias == "" {
		p.Alias = p.Name
		if p.Alias == "" {
			p.Alias = p.Chip + "/" + strconv.Itoa(p.Line)
		}
	}
}

// Validate checks the config beyond its fields' tags and fills each pin's
// defaults.
func (c *Config) Validate(n agent.Node) {
	if len(c.Pins) == 0 {
		n.Field("pins").Errorf("must list at least one pin")
	}
	seen := map[string]bool{}
	for i := range c.Pins {
		p := &c.Pins[i]
		pn := n.Field("pins").Index(i)
		if (p.Name == "") == (p.Chip == "") {
			pn.Errorf("needs either name, or chip and line")
		}
		p.fill()
		if seen[p.Alias] {
			pn.Errorf("pin %q is listed twice; give one an alias", p.Alias)
		}
		seen[p.Alias] = true
		if (p.Mode == "level" || p.Mode == "counter") && p.Interval < time.Millisecond {
			pn.Field("interval").Errorf("must be at least 1ms, got %q", pn.Field("interval").Text())
		}
	}
}

// Factory returns the registry entry of the GPIO source.
func Factory() agent.Factory[agent.Source] {
	return agent.Typed[agent.Source]("watches GPIO input pins: debounced edges, levels, pulse counts",
		Defaults, func(c *Config, env agent.Env) (agent.Source, error) { return New(*c, env), nil })
}
