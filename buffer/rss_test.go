package buffer

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// rssChild opens the log in dir, reads a little through a reader and
// prints its VmRSS in kB.
func rssChild(dir string) {
	l, err := Open(dir, Options{MaxBytes: 4 << 30})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	r, _ := l.Reader("rss")
	buf := make([]Record, 0, 256)
	st := l.Stats()
	for i := 0; i < 100 && st.NextSeq > st.FirstSeq; i++ {
		if _, err := r.Read(context.Background(), buf, 0); err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(2)
		}
	}
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fmt.Println(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	l.Close()
}
