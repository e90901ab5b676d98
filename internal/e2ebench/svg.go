package e2ebench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
)

// series is one line of a panel.
type series struct {
	name, color string
	x, y        []float64
}

// panel is one chart of a stacked plot, sharing the x axis.
type panel struct {
	title string
	lines []series
}

// band shades an x interval in every panel.
type band struct {
	from, to    float64
	label, fill string
}

const (
	plotW      = 760
	panelH     = 150
	marginL    = 70
	marginR    = 20
	marginTop  = 40
	panelGap   = 40
	axisBottom = 30
)

// stackedPlot draws panels above each other over x in [0, xmax] as a
// self-contained SVG document.
func stackedPlot(title, xlabel string, xmax float64, panels []panel, bands []band) []byte {
	var b bytes.Buffer
	h := marginTop + len(panels)*(panelH+panelGap) + axisBottom
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", plotW, h, plotW, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
	if xmax <= 0 {
		xmax = 1
	}
	iw := float64(plotW - marginL - marginR)
	xs := func(x float64) float64 { return marginL + x/xmax*iw }
	for i, p := range panels {
		top := float64(marginTop + i*(panelH+panelGap))
		ymax := 0.0
		for _, s := range p.lines {
			for _, v := range s.y {
				ymax = math.Max(ymax, v)
			}
		}
		ymax = niceCeil(ymax)
		ys := func(y float64) float64 { return top + panelH - y/ymax*panelH }
		for _, bd := range bands {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"/>`+"\n", xs(bd.from), top, math.Max(0, xs(bd.to)-xs(bd.from)), panelH, bd.fill)
			if i == 0 && bd.label != "" {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#555">%s</text>`+"\n", xs(bd.from)+3, top+12, esc(bd.label))
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-weight="bold">%s</text>`+"\n", marginL, top-6, esc(p.title))
		for k := 0; k <= 4; k++ {
			y := ymax * float64(k) / 4
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, plotW-marginR, ys(y), ys(y))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-4, ys(y)+4, esc(shortNum(y)))
		}
		for k := 0.0; k <= xmax+1e-9; k += xstep(xmax) {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#999"/>`+"\n", xs(k), xs(k), top+panelH, top+panelH+4)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xs(k), top+panelH+15, esc(shortNum(k)))
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%.1f" height="%d" fill="none" stroke="#333"/>`+"\n", marginL, top, iw, panelH)
		lx := float64(plotW - marginR - 5)
		for j, s := range p.lines {
			if len(s.x) == 0 {
				continue
			}
			b.WriteString(`<polyline fill="none" stroke-width="1.5" stroke="` + esc(s.color) + `" points="`)
			for k := range s.x {
				if k > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(&b, "%.1f,%.1f", xs(s.x[k]), ys(math.Max(0, s.y[k])))
			}
			b.WriteString(`"/>` + "\n")
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="%s">%s</text>`+"\n", lx, top+14+float64(j)*13, esc(s.color), esc(s.name))
		}
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", marginL+iw/2, h-6, esc(xlabel))
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// OutagePlot draws the outage run: throughput, backlog and memory over time,
// the broker's down time and the drain shaded.
func OutagePlot(o OutageResult) []byte {
	var t, tp, pub, bl, rss, anon []float64
	var prevT float64
	var prevPub uint64
	for i, s := range o.Samples {
		t = append(t, s.T)
		tp = append(tp, s.Throughput)
		r := 0.0
		if dt := s.T - prevT; i > 0 && dt > 0 {
			r = float64(s.Published-prevPub) / dt
		}
		pub = append(pub, r)
		prevT, prevPub = s.T, s.Published
		bl = append(bl, math.Max(0, float64(s.BacklogBytes))/1024)
		rss = append(rss, mb(s.RSS))
		anon = append(anon, mb(s.Anon))
	}
	xmax := 0.0
	if len(t) > 0 {
		xmax = t[len(t)-1]
	}
	panels := []panel{
		{title: "records/s", lines: []series{{"published", "#999999", t, pub}, {"delivered to Kafka", "#1f77b4", t, tp}}},
		{title: "agent backlog (KiB)", lines: []series{{"backlog", "#d62728", t, bl}}},
		{title: "agent resident memory (MiB)", lines: []series{{"VmRSS", "#2ca02c", t, rss}, {"RssAnon (heap, stacks)", "#9467bd", t, anon}}},
	}
	bands := []band{{o.DownAt, o.UpAt, "Kafka down", "#fde0dd"}}
	if o.DrainSeconds > 0 {
		bands = append(bands, band{o.UpAt, o.UpAt + o.DrainSeconds, "", "#e0ecf4"})
	}
	title := fmt.Sprintf("%s: %.0f msg/s QoS 1, Kafka down %.0f s (lost %d, drain %.1f s at %.0fx live)",
		o.Agent, o.Rate, o.UpAt-o.DownAt, o.Lost, o.DrainSeconds, o.DrainRatio)
	return stackedPlot(title, "seconds since the load started", xmax, panels, bands)
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v <= 0).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func xstep(xmax float64) float64 { return niceCeil(xmax / 8) }

func shortNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e5)/10)
	case a >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v/1e2)/10)
	}
	return fmt.Sprintf("%g", math.Round(v*10)/10)
}
