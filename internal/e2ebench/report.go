package e2ebench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

func rateText(r float64) string {
	if r == 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func (b *bench) logRun(r RunResult) {
	b.logf("%-16s %-11s qos %d %-8s #%d: published %d delivered %d lost %d dup %d unexpected %d, %.0f rec/s, cpu %.2f µs/rec, peak %.1f MB%s",
		r.Agent, r.Pipeline, r.QoS, rateText(r.Rate), r.Repeat, r.Published, r.Delivered, r.Lost, r.Duplicates, r.Unexpected,
		r.Throughput, r.CPUPerRecord, mb(r.PeakRSS), errText(r.Error))
}

func (b *bench) logOutage(o OutageResult) {
	b.logf("%s outage: published %d delivered %d lost %d dup %d; drain %.2f s at %.0f rec/s (%.1fx live); peak backlog %d B; RSS in outage %.1f MB%s",
		o.Agent, o.Published, o.Delivered, o.Lost, o.Duplicates, o.DrainSeconds, o.DrainRate, o.DrainRatio, o.PeakBacklogBytes, mb(o.OutageRSS), errText(o.Error))
}

func errText(e string) string {
	if e == "" {
		return ""
	}
	return " ERROR: " + e
}

// WriteTable prints the results as the table `make bench-e2e` shows.
func WriteTable(w io.Writer, res *Results) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "agent\tpipeline\tqos\trate\t#\tpublished\texpected\tdelivered\tlost\tdup\trec/s\tmsg/s in\tvs ceiling\tp50 ms\tp90 ms\tp99 ms\tmax ms\tcpu µs/rec\tpeak RSS MB\tpeak anon MB\t")
	row := func(r RunResult) {
		ratio, lat := "-", []string{"-", "-", "-", "-"}
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.0f%%", 100*r.Ratio)
		}
		if r.Latency != nil {
			l := r.Latency
			lat = []string{f1(l.P50), f1(l.P90), f1(l.P99), f1(l.Max)}
		}
		cpu, rss, anon := "-", "-", "-"
		if r.CPUPerRecord > 0 {
			cpu = fmt.Sprintf("%.2f", r.CPUPerRecord)
		}
		if r.PeakRSS > 0 {
			rss = f1(mb(r.PeakRSS))
		}
		if r.PeakAnon > 0 {
			anon = f1(mb(r.PeakAnon))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Agent, r.Pipeline, r.QoS, rateText(r.Rate), r.Repeat, r.Published, r.Expected, r.Delivered, r.Lost, r.Duplicates,
			r.Throughput, r.InputRate, ratio, lat[0], lat[1], lat[2], lat[3], cpu, rss, anon)
	}
	for _, r := range res.Ceiling {
		row(r)
	}
	for _, r := range res.Runs {
		row(r)
	}
	tw.Flush()
	if len(res.Sessions) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "agent\tpipeline\tidle RSS MB\tidle anon MB\tstart-up peak MB\t")
		for _, s := range res.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", s.Agent, s.Pipeline, f1(mb(s.IdleRSS)), f1(mb(s.IdleAnon)), f1(mb(s.StartHWM)))
		}
		tw.Flush()
	}
	if len(res.Outages) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "outage\trate\tdown s\tup s\tpublished\texpected\tdelivered\tlost\tdup\tpeak backlog KB\tRSS in outage MB\tanon in outage MB\tpeak RSS MB\tresume s\tdrain s\tdrain rec/s\tdrain/live\tp99 ms\tmax ms\t")
		for _, o := range res.Outages {
			backlog := "-"
			if o.PeakBacklogBytes >= 0 {
				backlog = fmt.Sprintf("%.0f", float64(o.PeakBacklogBytes)/1024)
			}
			fmt.Fprintf(tw, "%s\t%.0f/s\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.0f\t%.1fx\t%s\t%s\t\n",
				o.Agent, o.Rate, o.DownAt, o.UpAt, o.Published, o.Expected, o.Delivered, o.Lost, o.Duplicates, backlog,
				f1(mb(o.OutageRSS)), f1(mb(o.OutageAnon)), f1(mb(o.PeakRSS)), o.ResumeSeconds, o.DrainSeconds, o.DrainRate, o.DrainRatio, f1(o.Latency.P99), f1(o.Latency.Max))
		}
		tw.Flush()
	}
	writeLowRate(w, res)
	for _, e := range res.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

// WriteFiles writes results.json, table.txt and, with an outage run,
// outage.svg (the first agent's) and outage-AGENT.svg for the others into dir.
func WriteFiles(dir string, res *Results) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("e2ebench: results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("e2ebench: %w", err)
	}
	var t strings.Builder
	WriteTable(&t, res)
	if err := os.WriteFile(filepath.Join(dir, "table.txt"), []byte(t.String()), 0o644); err != nil {
		return fmt.Errorf("e2ebench: %w", err)
	}
	for i, o := range res.Outages {
		name := "outage.svg"
		if i > 0 {
			name = "outage-" + o.Agent + ".svg"
		}
		if err := os.WriteFile(filepath.Join(dir, name), OutagePlot(o), 0o644); err != nil {
			return fmt.Errorf("e2ebench: %w", err)
		}
	}
	return nil
}
