// Package promtest reads gathered or scraped Prometheus metrics in tests.
package promtest

import dto "github.com/prometheus/client_model/go"

// Sum adds up the series of family whose labels include labels (name,
// value pairs): counter and gauge values, histogram sample counts. It
// returns -1 when no such series exists.
func Sum(mfs []*dto.MetricFamily, family string, labels ...string) float64 {
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		sum, found := 0.0, false
	series:
		for _, s := range mf.Metric {
			have := map[string]string{}
			for _, lp := range s.Label {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			found = true
			switch {
			case s.Counter != nil:
				sum += s.Counter.GetValue()
			case s.Gauge != nil:
				sum += s.Gauge.GetValue()
			case s.Histogram != nil:
				sum += float64(s.Histogram.GetSampleCount())
			}
		}
		if found {
			return sum
		}
	}
	return -1
}
