package h1

import "time"

// monoNow reads only the monotonic clock, where time.Now reads the wall
// clock too: each read is a call into the vDSO, and a proxied request reads
// the clock several times. Its result serves for deadlines and durations;
// its wall reading follows the monotonic clock from the process's start, so
// it is not for display.
func monoNow() time.Time { return clockBase.Add(time.Since(clockBase)) }

var clockBase = time.Now()
