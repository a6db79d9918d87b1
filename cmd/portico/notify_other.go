//go:build !linux

package main

// reloadingState tells a service manager a reload started.
func reloadingState() string { return "RELOADING=1" }
