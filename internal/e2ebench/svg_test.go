package e2ebench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// parseSVG decodes every token of doc and counts the elements by name.
func parseSVG(t *testing.T, doc []byte) map[string]int {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	elems := map[string]int{}
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				if se.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q, want the SVG one", se.Name.Space)
				}
			}
			elems[se.Name.Local]++
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	return elems
}

func TestOutagePlot(t *testing.T) {
	o := OutageResult{Agent: `a<b & "c"`, Rate: 2000, DownAt: 20, UpAt: 40, DrainSeconds: 2}
	for i := range 200 {
		ts := float64(i) * 0.25
		o.Samples = append(o.Samples, Sample{T: ts, Published: uint64(i * 500), Delivered: uint64(i * 480),
			Throughput: 1900, BacklogBytes: int64(i) * 1000, BacklogRecords: int64(i), RSS: 9 << 20, Anon: 4 << 20})
	}
	doc := OutagePlot(o)
	elems := parseSVG(t, doc)
	if elems["polyline"] != 5 {
		t.Errorf("got %d polylines, want 5 (published, delivered, backlog, RSS, anon)", elems["polyline"])
	}
	if !strings.Contains(string(doc), "a&lt;b &amp;") {
		t.Error("the agent's name is not escaped")
	}
}

func TestOutagePlotEmpty(t *testing.T) {
	parseSVG(t, OutagePlot(OutageResult{Agent: "x"}))
}

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 1}, {-3, 1}, {0.7, 1}, {1, 1}, {1.1, 2}, {3, 5}, {7, 10}, {2000, 2000}, {2001, 5000}, {48_000, 50_000},
	} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
