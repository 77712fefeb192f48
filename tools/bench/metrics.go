package bench

import (
	"fmt"
	"github.com/hsmfs/hsmfs/internal/hsmctl"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// With --metrics every hsmfs mount serves metrics (on a port of the
// kernel's choosing, which .hsm/status names) and the harness scrapes it
// once a second for as long as the mount lives, as an eager Prometheus
// would: the figures then include the hooks on the hot path and the
// scrapes (each one scans the journal's unblessed records).
const scrapeEvery = time.Second

// metricsArgs are the hsmfs mount arguments that --metrics adds.
var metricsArgs = []string{"--metrics", "127.0.0.1:0"}

// scrapeMetrics starts scraping the mount whose status is st, and
// returns the function that stops it and reports what the scrapes cost.
// Without --metrics (no "metrics" in the status) it does nothing.
func scrapeMetrics(t *Target, st *hsmctl.Status) (stop func()) {
	addr := st.Metrics
	if addr == "" {
		return func() {}
	}
	url := "http://" + addr + "/metrics"
	quit := make(chan struct{})
	var wg sync.WaitGroup
	var took []time.Duration
	var failed int
	var lastErr error
	wg.Go(func() {
		c := http.Client{Timeout: 30 * time.Second}
		tick := time.NewTicker(scrapeEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := c.Get(url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s", resp.Status)
				}
			}
			if err != nil {
				failed++
				lastErr = err
				continue
			}
			took = append(took, time.Since(start))
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			msg := fmt.Sprintf("metrics of %s (%s): %d scrapes", t.Mnt, url, len(took))
			if len(took) > 0 {
				slices.Sort(took)
				msg += fmt.Sprintf(", median %v, max %v", took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond))
			}
			if failed > 0 {
				msg += fmt.Sprintf(", %d FAILED (last: %v)", failed, lastErr)
			}
			fmt.Fprintln(os.Stderr, msg)
		})
	}
}
