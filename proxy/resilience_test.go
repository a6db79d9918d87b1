package proxy

import "testing"

// The budget allows its burst, then retry_budget_percent of requests.
func TestRetryBudgetAllowsShareOfRequests(t *testing.T) {
	for _, tc := range []struct {
		percent, requests, want int
	}{
		{20, 0, 10},     // a quiet pool still has its burst
		{20, 100, 29},   // burst + 20% of the 99 requests after the first, whose deposit a full budget drops
		{20, 1000, 209}, // burst + 199.8
		{100, 50, 59},
		{1, 1000, 19},
	} {
		rb := newRetryBudget(tc.percent)
		got := 0
		for range tc.requests {
			rb.request()
			// Spend as we go, so that deposits are not capped away.
			for rb.retry() {
				got++
			}
		}
		for rb.retry() {
			got++
		}
		if got != tc.want {
			t.Errorf("%d%% of %d requests: %d retries allowed, want %d", tc.percent, tc.requests, got, tc.want)
		}
	}
}
