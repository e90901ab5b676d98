package e2ebench

import (
	"fmt"
	"io"
)

// Target is one of issue 9's goals, checked against the results.
type Target struct {
	Agent, Name string
	Got, Want   string
	Met         bool
}

// Targets checks the results against the goals: throughput ratios to the
// ceiling (median of the runs), lost = 0, CPU per record, idle, peak and
// outage memory, and the drain rate.
func Targets(res *Results) []Target {
	var out []Target
	for _, a := range res.Config.Agents {
		add := func(name, got, want string, met bool) {
			out = append(out, Target{Agent: a.Name, Name: name, Got: got, Want: want, Met: met})
		}
		var cpu []float64
		for _, q := range []int{0, 1} {
			var ratios []float64
			var lost uint64
			var peak int64
			for _, r := range res.Runs {
				if r.Agent != a.Name || r.Pipeline != "passthrough" || r.QoS != q || r.Rate != 0 {
					continue
				}
				ratios = append(ratios, r.Ratio)
				lost += r.Lost
				peak = max(peak, r.PeakRSS)
				cpu = append(cpu, r.CPUPerRecord)
			}
			if len(ratios) == 0 {
				continue
			}
			m := median(ratios)
			add(fmt.Sprintf("QoS %d max rate vs ceiling", q), fmt.Sprintf("%.0f%%", 100*m), ">= 90%", m >= 0.9)
			add(fmt.Sprintf("QoS %d lost", q), fmt.Sprint(lost), "0", lost == 0)
			add(fmt.Sprintf("QoS %d peak RSS", q), fmt.Sprintf("%.1f MB", mb(peak)), "<= 20 MB", mb(peak) <= 20)
		}
		if len(cpu) > 0 {
			m := median(cpu)
			add("CPU per record (max rate, median)", fmt.Sprintf("%.2f µs", m), "<= 6 µs", m <= 6)
		}
		for _, s := range res.Sessions {
			if s.Agent == a.Name && s.Pipeline == "passthrough" {
				add("idle RSS", fmt.Sprintf("%.1f MB", mb(s.IdleRSS)), "<= 10 MB", mb(s.IdleRSS) <= 10)
			}
		}
		for _, o := range res.Outages {
			if o.Agent != a.Name {
				continue
			}
			add("outage lost", fmt.Sprint(o.Lost), "0", o.Lost == 0)
			add("RSS during outage", fmt.Sprintf("%.1f MB", mb(o.OutageRSS)), "<= 20 MB", mb(o.OutageRSS) <= 20)
			add("drain rate / live rate", fmt.Sprintf("%.1fx", o.DrainRatio), ">= 10x", o.DrainRatio >= 10)
		}
	}
	return out
}

// WriteTargets prints Targets.
func WriteTargets(w io.Writer, res *Results) {
	t := Targets(res)
	if len(t) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntargets (issue 9):")
	for _, x := range t {
		mark := "MISS"
		if x.Met {
			mark = "ok"
		}
		fmt.Fprintf(w, "  %-4s %-12s %-36s %-10s (want %s)\n", mark, x.Agent, x.Name, x.Got, x.Want)
	}
}
