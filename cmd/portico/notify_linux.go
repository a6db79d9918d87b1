package main

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// reloadingState tells systemd a reload starts now, on CLOCK_MONOTONIC as
// it requires.
func reloadingState() string {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return "RELOADING=1"
	}
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}
